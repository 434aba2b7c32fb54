"""cuvae-tui's command line: the training options of :mod:`cuvae.engine.options` plus the UI's own."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """\
examples:
  cuvae-tui                                  # train the default VAE on MNIST (offline: the bundled subset)
  cuvae-tui --latent 2 --epochs 20           # a 2-D latent, with its latent map (press m)
  cuvae-tui --recipe chapter --data-dir ~/mnist
  cuvae-tui --open runs/default-mnist-vae-z8 # browse a trained model, read-only
  cuvae-tui --serve --port 8000              # the same app as a web page (pip install 'cuvae[serve]')
  cuvae-tui --pixels kitty                   # real pixels even where detection fails (e.g. in tmux)
keys: space pause · s samples · z zoom · a pixels/half-blocks/ASCII · g plot view · d diagnostics · l latent size
      c compare sizes · i interpolation · m map · e PNG · ? help · q quit
Each latent size trains in RUNS/<recipe>-<dataset>-<model>-z<size>; quitting keeps the last complete epoch
and starting again with the same options resumes it.
"""

HIDDEN = ("out", "resume", "json")  # cuvae-train options that make no sense here


def build_parser() -> argparse.ArgumentParser:
    from cuvae.engine.config_file import add_config_options
    from cuvae.engine.options import add_train_options

    p = add_train_options(argparse.ArgumentParser(prog="cuvae-tui", description="Watch a hand-written VAE learn, in the terminal.",
                                                  epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter))
    for action in p._actions:  # keep every training option, hide the ones about output
        if action.dest in HIDDEN:
            action.help = argparse.SUPPRESS
    u = p.add_argument_group("terminal UI")
    u.add_argument("--runs", type=Path, default=Path("runs"), metavar="DIR",
                   help="folder holding one run directory per latent size (default: runs)")
    u.add_argument("--open", type=Path, metavar="RUN_DIR", help="browse a trained run read-only (no training)")
    u.add_argument("--pixels", choices=("auto", "kitty", "sixel", "halfblock", "ascii"), default="auto",
                   help="how digits are drawn: real pixels through the kitty or sixel protocol, grey half-blocks or "
                        "ASCII (default auto: pixels when the terminal answers to a graphics protocol, else "
                        "half-blocks; a forced protocol falls back to half-blocks where there is no terminal)")
    u.add_argument("--ascii", action="store_true", help="start with ASCII digits (the same as --pixels ascii)")
    u.add_argument("--serve", action="store_true", help="serve the app as a web page (needs textual-serve)")
    u.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    u.add_argument("--port", type=int, default=8000, help="port to serve on (default 8000)")
    return add_config_options(p, print_config=False)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from cuvae.errors import CuvaeError

    from cuvae.engine import config_file

    p = build_parser()
    args = config_file.parse_args(p, argv)
    for dest in HIDDEN:
        if getattr(args, dest, None):
            flag = "--" + dest
            raise CuvaeError(f"cuvae-tui does not take {flag}: runs live under --runs DIR (one per latent size); "
                             "use --open RUN_DIR to browse a run")
    if args.open is not None and not (args.open / "checkpoint.npz").exists():
        raise CuvaeError(f"--open {args.open}: no checkpoint.npz there; pass a run directory written by cuvae-train "
                         "or cuvae-tui")
    return args
