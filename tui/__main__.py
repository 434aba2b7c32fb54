"""``cuvae-tui``: the terminal UI (``python -m cuvae_tui``)."""

from __future__ import annotations

import shlex
import sys

from .options import parse_args

def serve(argv: list[str], host: str, port: int) -> int:
    try:
        from textual_serve.server import Server
    except ImportError:
        from cuvae.errors import CuvaeError

        raise CuvaeError("--serve needs textual-serve: pip install textual-serve (or 'cuvae[serve]')") from None
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
    from . import pixels

    # ask the terminal before Textual owns stdin (a forced protocol needs the cell size measured too)
    detected = pixels.detect() if args.pixels in ("auto", *pixels.PROTOCOLS) and not args.ascii else None
    from .app import app_from_args

    app = app_from_args(args, detected)
    if not args.open:
        from .training import leave_cores_to_training

        leave_cores_to_training()
    app.run()
    return app.return_code or 0


def cli() -> int:
    from cuvae.engine.options import run_main

    return run_main(main)


if __name__ == "__main__":
    sys.exit(cli())
