"""What a trained model is worth and what it looks like: ELBO, importance-weighted NLL, active
units, ELBO surgery and sharpness; views (reconstructions, samples, latent maps) and PNG rendering.

May import: :mod:`cuvae.nn`, :mod:`cuvae.backends`, :mod:`cuvae.data`, :mod:`cuvae.engine`
(checkpoints, configs); never :mod:`cuvae.cli` or the UI.
"""
