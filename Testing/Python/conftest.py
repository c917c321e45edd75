"""Shared pytest fixtures: the real series from ../shared (unpacked once per session)."""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("ICH_SHARED_DIR", REPO.parent / "shared"))  # override for worktrees


@pytest.fixture(scope="session")
def shared_cache() -> Path:
    """Folder with the unpacked real series (``rsna/<series>/``, ``rsna-unlabelled/<series>/``)."""
    tool = SHARED / "tools" / "unpack-data"
    if not tool.exists():
        pytest.skip("../shared is absent: real-series tests need it")
    dest = os.environ.get("ICH_SHARED_CACHE", str(Path.home() / ".cache" / "ichanalyzer-shared"))
    out = subprocess.run([str(tool), dest], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def series_table(shared_cache: Path) -> dict[str, dict[str, str]]:
    """Rows of ``series.csv`` by series folder name."""
    with open(shared_cache / "rsna" / "series.csv") as f:
        return {row["series_dir"]: row for row in csv.DictReader(f)}


def series_dir(cache: Path, prefix: str) -> Path:
    """Folder of the labelled (or unlabelled) series whose name starts with ``prefix``."""
    for group in ("rsna", "rsna-unlabelled"):
        hits = sorted((cache / group).glob(prefix + "*"))
        hits = [h for h in hits if h.is_dir()]
        if hits:
            return hits[0]
    raise FileNotFoundError(prefix)


@pytest.fixture
def scene():
    """A fresh MRML scene (real MRML core from slicer-core), set as ``slicer.mrmlScene`` for the test."""
    slicer = pytest.importorskip("slicer", reason="slicer-core (the MRML core) is not installed")
    previous = getattr(slicer, "mrmlScene", None)
    new_scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = new_scene
    yield new_scene
    new_scene.Clear(1)
    slicer.mrmlScene = previous


@pytest.fixture
def logic(scene):
    """The module's logic on the test's scene."""
    from ICHAnalyzerSlicerLib import logic as slicerlogic

    return slicerlogic.ICHAnalyzerLogic(scene)
