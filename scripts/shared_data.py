"""Where the benchmark and study scripts find the real series: the unpacked ../shared data."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_cache(explicit: str | None = None) -> Path:
    """The unpacked shared data: ``explicit`` if given, else what ``$ICH_SHARED_DIR/tools/unpack-data``
    (default ``../shared``) prints."""
    if explicit:
        return Path(explicit)
    shared = Path(os.environ.get("ICH_SHARED_DIR", REPO.parent / "shared"))
    out = subprocess.run([str(shared / "tools" / "unpack-data")], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def find_series(cache: Path, prefix: str) -> Path:
    """The series folder whose name starts with ``prefix`` (labelled series first); exits if none."""
    for group in ("rsna", "rsna-unlabelled"):
        hits = sorted(p for p in (cache / group).glob(prefix + "*") if p.is_dir())
        if hits:
            return hits[0]
    raise SystemExit(f"series {prefix} not found under {cache}")
