"""``cuvae-tui``: the terminal UI (``python -m cuvae_tui``)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

EPILOG = """\
examples:
  cuvae-tui                                  # train the default VAE on MNIST (offline: the bundled subset)
  cuvae-tui --latent 2 --epochs 20           # a 2-D latent, with its latent map (press m)
  cuvae-tui --recipe chapter --data-dir ~/mnist
  cuvae-tui --open runs/default-mnist-vae-z8 # browse a trained model, read-only
  cuvae-tui --serve --port 8000              # the same app as a web page (pip install 'cuvae[web]')
keys: space pause · s samples · l latent size · a ASCII/hi-fi · i interpolation · m map · e PNG · ? help · q quit
Each latent size trains in RUNS/<recipe>-<dataset>-<model>-z<size>; quitting keeps the last complete epoch
and starting again with the same options resumes it.
"""

HIDDEN = ("out", "resume", "json")  # cuvae-train options that make no sense here


def build_parser() -> argparse.ArgumentParser:
    from cuvae.train import build_parser as train_parser

    p = train_parser()
    p.prog, p.description, p.epilog = "cuvae-tui", "Watch a hand-written VAE learn, in the terminal.", EPILOG
    for action in p._actions:  # keep every training option, hide the ones about output
        if action.dest in HIDDEN:
            action.help = argparse.SUPPRESS
    u = p.add_argument_group("terminal UI")
    u.add_argument("--runs", type=Path, default=Path("runs"), metavar="DIR",
                   help="folder holding one run directory per latent size (default: runs)")
    u.add_argument("--open", type=Path, metavar="RUN_DIR", help="browse a trained run read-only (no training)")
    u.add_argument("--ascii", action="store_true", help="start with ASCII digits (toggle with a)")
    u.add_argument("--serve", action="store_true", help="serve the app as a web page (needs textual-serve)")
    u.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    u.add_argument("--port", type=int, default=8000, help="port to serve on (default 8000)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from cuvae.errors import CuvaeError

    p = build_parser()
    args = p.parse_args(argv)
    for dest in HIDDEN:
        if getattr(args, dest, None):
            flag = "--" + dest
            raise CuvaeError(f"cuvae-tui does not take {flag}: runs live under --runs DIR (one per latent size); "
                             "use --open RUN_DIR to browse a run")
    if args.open is not None and not (args.open / "checkpoint.npz").exists():
        raise CuvaeError(f"--open {args.open}: no checkpoint.npz there; pass a run directory written by cuvae-train "
                         "or cuvae-tui")
    return args


def serve(argv: list[str], host: str, port: int) -> int:
    try:
        from textual_serve.server import Server
    except ImportError:
        from cuvae.errors import CuvaeError

        raise CuvaeError("--serve needs textual-serve: pip install textual-serve (or 'cuvae[web]')") from None
    rest, skip = [], False
    for a in argv:  # the served command is this one without --serve/--host/--port
        if skip:
            skip = False
            continue
        if a in ("--serve",):
            continue
        if a in ("--host", "--port"):
            skip = True
            continue
        if a.startswith(("--host=", "--port=")):
            continue
        rest.append(a)
    command = " ".join(shlex.quote(x) for x in [sys.executable, "-m", "cuvae_tui", *rest])
    print(f"serving cuvae-tui on http://{host}:{port} (Ctrl-C stops)", file=sys.stderr)
    Server(command, host=host, port=port, title="cuvae").serve()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.serve:
        return serve(argv, args.host, args.port)
    from .app import app_from_args

    app = app_from_args(args)
    app.run()
    return app.return_code or 0


def cli() -> int:
    from cuvae.cli import run_main

    return run_main(main)


if __name__ == "__main__":
    sys.exit(cli())
