"""``python -m soulx_live`` is the ``soulx-live`` command."""
from __future__ import annotations

import sys

from soulx_live.cli import main

if __name__ == "__main__":
    sys.exit(main())
