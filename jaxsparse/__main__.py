"""``python -m jaxsparse``: the same as the ``jaxsparse`` command."""

import sys

from jaxsparse._cli import main

if __name__ == "__main__":
    sys.exit(main())
