"""``python -m cuvae.evaluate``: hands over to :mod:`cuvae.cli.evaluate`."""

import sys

from cuvae.cli.evaluate import cli, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(cli())
