"""Screens pushed over the main one: help, latent size, interpolation, latent map."""
