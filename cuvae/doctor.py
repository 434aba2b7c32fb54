"""``python -m cuvae.doctor``: hands over to :mod:`cuvae.cli.doctor`."""

import sys

from cuvae.cli.doctor import cli, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(cli())
