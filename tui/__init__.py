"""cuvae-tui: a Textual terminal UI for cuvae (imported as ``cuvae_tui``)."""
