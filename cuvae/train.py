"""``python -m cuvae.train``: hands over to :mod:`cuvae.cli.train`."""

import sys

from cuvae.cli.train import cli, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(cli())
