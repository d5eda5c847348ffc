"""Warnings a user must see: one line on stderr, prefixed so it stands out from progress bars and logs.

>>> import contextlib, io
>>> err = io.StringIO()
>>> with contextlib.redirect_stderr(err):
...     warn("step 3 was skipped")
>>> err.getvalue()
'[thinkrl] warning: step 3 was skipped\\n'
"""

from __future__ import annotations

import sys


def warn(message: str) -> None:
    """Print ``[thinkrl] warning: MESSAGE`` to stderr (flushed, so it is not lost in a crash)."""
    print(f"[thinkrl] warning: {message}", file=sys.stderr, flush=True)
