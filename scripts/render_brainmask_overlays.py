#!/usr/bin/env python
"""Render the brain mask of every real series (and the phantom) to ``docs/brainmask/*.png``.

Each PNG shows the axial slices from just below the mask to just above it (brain window), the mask in
green; the intracranial volumes go to ``docs/brainmask/icv.csv`` (the README table is written from it).

Usage: python scripts/render_brainmask_overlays.py [--cache DIR] [--out docs/brainmask]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "ICHAnalyzer"))

from ICHAnalyzerLib.brainmask import brain_mask, intracranial_volume_ml  # noqa: E402
from ICHAnalyzerLib.figures import render_overlay  # noqa: E402
from ICHAnalyzerLib.io import load_ct  # noqa: E402
from ICHAnalyzerLib.phantom import make_phantom  # noqa: E402
from shared_data import shared_cache  # noqa: E402

MASK_COLOR = (40, 220, 60)
MAX_TILES = 24


def slices_around(mask: np.ndarray) -> list[int]:
    """Slices from two below the mask to one above it, thinned evenly to at most ``MAX_TILES``."""
    ks = np.flatnonzero(mask.any(axis=(1, 2)))
    if ks.size == 0:
        ks = np.arange(mask.shape[0])
    chosen = np.arange(max(ks[0] - 2, 0), min(ks[-1] + 2, mask.shape[0]))
    if chosen.size > MAX_TILES:
        chosen = chosen[np.linspace(0, chosen.size - 1, MAX_TILES).round().astype(int)]
    return [int(k) for k in chosen]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="unpacked shared data (default: run ../shared/tools/unpack-data)")
    parser.add_argument("--out", default=str(REPO / "docs" / "brainmask"))
    args = parser.parse_args()
    cache = shared_cache(args.cache)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(cache / "rsna" / "series.csv") as f:
        table = {row["series_dir"]: row for row in csv.DictReader(f)}
    folders = sorted(p for p in (cache / "rsna").iterdir() if p.is_dir())
    folders += sorted(p for p in (cache / "rsna-unlabelled").iterdir() if p.is_dir())
    rows = []
    for folder in folders:
        ct = load_ct(folder)
        start = time.perf_counter()
        mask = brain_mask(ct)
        seconds = time.perf_counter() - start
        icv = intracranial_volume_ml(mask, ct)
        row = table.get(folder.name, {})
        kind = "unlabelled" if not row else ("normal" if row["positive_slices_any"] == "0" else "hemorrhage")
        prefix = folder.name[:11]
        title = (f"{prefix} ({kind}, tilt {ct.tilt_deg:.1f} deg, {ct.shape[0]} slices of "
                 f"{ct.spacing[2]:.2f} mm): ICV {icv:.0f} mL")
        render_overlay(ct, [(mask, MASK_COLOR, "brain mask")], out / f"{prefix}.png",
                       slices=slices_around(mask), title=title)
        rows.append({"series": prefix, "kind": kind, "tilt_deg": f"{ct.tilt_deg:.1f}",
                     "slices": ct.shape[0], "plane_mm": f"{ct.spacing[2]:.2f}", "icv_ml": f"{icv:.0f}",
                     "mask_s": f"{seconds:.2f}"})
        print(", ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    phantom = make_phantom(seed=0, tilt_deg=20.0)
    mask = brain_mask(phantom.ct)
    icv = intracranial_volume_ml(mask, phantom.ct)
    render_overlay(phantom.ct, [(mask, MASK_COLOR, "brain mask")], out / "phantom_tilt20.png",
                   slices=slices_around(mask),
                   title=f"phantom seed 0, tilt 20 deg: ICV {icv:.0f} mL (analytic "
                         f"{phantom.intracranial_volume_ml:.0f} mL)")
    rows.append({"series": "phantom_tilt20", "kind": "phantom", "tilt_deg": "20.0", "slices": 32,
                 "plane_mm": "5.00", "icv_ml": f"{icv:.0f}", "mask_s": ""})
    with open(out / "icv.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
