"""``python -m thinkrl ...`` is ``thinkrl ...`` (also what ``torchrun -m thinkrl`` runs on every rank)."""

import sys

from thinkrl.cli import main

if __name__ == "__main__":
    sys.exit(main())
