"""Timing of the clinical measures (midline shift, template registration, location, ICH score).

Runs ``measures.clinical_measures`` on real series (../shared) with a crude hyperdensity label map
(55-90 HU, 5 voxels inside the brain mask, opened: a few "hematomas" so that location is exercised)
and prints the median wall and CPU time of each step over ``--repeat`` runs. Loading, the brain mask
and volumetry are not counted (they belong to the pipeline). Target: <= 2 s per scan for a 34-slice
series on 2 cores.

    ICH_SHARED_DIR=/work/shared python scripts/bench_measures.py [--repeat 3] [--series PREFIX ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ICHAnalyzer"))

from ICHAnalyzerLib import atlas as atlas_module  # noqa: E402
from ICHAnalyzerLib import measures  # noqa: E402
from ICHAnalyzerLib.brainmask import brain_mask  # noqa: E402
from ICHAnalyzerLib.io import load_ct  # noqa: E402
from ICHAnalyzerLib.volumetry import measure_labels  # noqa: E402
from shared_data import shared_cache  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SERIES = ("ID_73637515", "ID_59abcbf1", "ID_cd5a85fd", "ID_8c5a14af")


def crude_labels(ct, brain):
    inner = ndi.binary_erosion(brain, iterations=5)
    hyper = (ct.hu > 55) & (ct.hu < 90) & inner
    return ndi.binary_opening(hyper, iterations=2).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--series", nargs="*", default=list(DEFAULT_SERIES))
    args = parser.parse_args()
    cache = shared_cache()
    folder = atlas_module.find_templates()
    t0 = time.perf_counter()
    if folder is not None:
        atlas_module.load_atlas(folder)
    print(f"templates: {folder} (first read {time.perf_counter() - t0:.2f} s, cached afterwards)")
    print(f"cores visible: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.1f}")
    print("| series | slices | tilt | hematomas | symmetry plane s | registration s | midline s | location s "
          "| total wall s | total CPU s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for prefix in args.series:
        path = next(p for group in ("rsna", "rsna-unlabelled")
                    for p in sorted((cache / group).glob(prefix + "*")) if p.is_dir())
        ct = load_ct(path)
        brain = brain_mask(ct)
        labels = crude_labels(ct, brain)
        volumes = measure_labels(labels, ct.affine)
        steps: dict[str, list[float]] = {}
        cpu = []
        for _ in range(args.repeat):
            c0 = time.process_time()
            result = measures.clinical_measures(ct, labels, brain, volumes, gcs=12, age=70)
            cpu.append(time.process_time() - c0)
            for key, value in result["timing_s"].items():
                steps.setdefault(key, []).append(value)
        med = {key: statistics.median(values) for key, values in steps.items()}
        count = sum(len(volumes[k]["hematomas"]) for k in ("IPH", "IVH", "SAH", "SDH", "EDH"))
        print(f"| {path.name[:11]} | {ct.shape[0]} | {ct.tilt_deg:.1f} | {count} | "
              f"{med['symmetry_plane']:.2f} | {med['registration']:.2f} | {med['midline_shift']:.2f} | "
              f"{med['location']:.2f} | {med['total']:.2f} | {statistics.median(cpu):.2f} |", flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
