"""``python -m cuvae.show``: hands over to :mod:`cuvae.cli.show`."""

import sys

from cuvae.cli.show import cli, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(cli())
