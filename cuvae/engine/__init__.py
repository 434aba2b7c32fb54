"""The training loop and what it needs: the trainer, its typed events, checkpoints, configs and
recipes, and the options both faces (CLI and UI) turn into a config.

May import: :mod:`cuvae.nn`, :mod:`cuvae.backends`, :mod:`cuvae.data`, :mod:`cuvae.measure`;
never :mod:`cuvae.cli` or the UI.
"""
