"""Where reprieve keeps its own state on this machine: REPRIEVE_HOME, or ~/.reprieve.

Its own module, free of imports, because `wal push` (once per WAL file) must
not pay for the catalog's database libraries to learn a folder name.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("REPRIEVE_HOME") or Path.home() / ".reprieve")
