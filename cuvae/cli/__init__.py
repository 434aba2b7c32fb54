"""The command lines: argument parsing and printing only (``cuvae-train``, ``-evaluate``, ``-show``,
``-sweep`` and its results tables, the console reporter). ``python -m cuvae.train`` etc. hand over here.

May import anything of cuvae but the UI.
"""
