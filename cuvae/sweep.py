"""``python -m cuvae.sweep``: hands over to :mod:`cuvae.cli.sweep`."""

import sys

from cuvae.cli.sweep import cli, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(cli())
