"""``python -m styleblend ...`` = the ``styleblend`` command."""
import sys

from .runners.cli import main

if __name__ == "__main__":
    sys.exit(main())
