"""``python -m zimage_api``: the command line (see :mod:`zimage_api.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
