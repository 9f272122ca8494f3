"""Entry point of the ``striate`` command (see `striate.sw.cli`)."""

import sys

from .sw.cli import main

if __name__ == "__main__":
    sys.exit(main())
