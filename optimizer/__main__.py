"""`python -m optimizer` is the `prompt-worker` command."""

import sys

from optimizer.cli import main

if __name__ == "__main__":
    sys.exit(main())
