"""Benchmark measure_labels on a 512 x 512 x 40 label map with all five subtypes (target <= 0.3 s).

Usage: python scripts/bench_volumetry.py [--repeats N]
The map (0.45 mm pixels, 5 mm slices, 20 deg gantry tilt) holds a 35 mL IPH, a 2-part IVH, 60 small SAH
fragments, a 100 mL SDH crescent and an 11 mL EDH lens. Prints the wall and CPU time of measure_labels
(the CPU time is the steadier figure on a shared machine).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ICHAnalyzer"))
from ICHAnalyzerLib.volumetry import measure_labels  # noqa: E402


def make_label_map(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    nk, nj, ni = 40, 512, 512
    dx, dz, tilt = 0.45, 5.0, math.radians(20.0)
    affine = np.eye(4)
    affine[:3, 0] = [dx, 0, 0]
    affine[:3, 1] = [0, dx, 0]
    affine[:3, 2] = [0, dz * math.tan(tilt), dz]
    # physical coordinates by broadcasting (k, j, i): x depends on i, y on j and k (shear), z on k
    x = (np.arange(ni) * dx - 115.0)[None, None, :]
    shift = np.arange(nk) * dz * math.tan(tilt) - 50.0
    y = (np.arange(nj) * dx - 115.0)[None, :, None] + shift[:, None, None]
    z = (np.arange(nk) * dz - 100.0)[:, None, None]
    labels = np.zeros((nk, nj, ni), np.uint8)

    def ellipsoid(c, axes):
        return ((x - c[0]) / axes[0]) ** 2 + ((y - c[1]) / axes[1]) ** 2 + ((z - c[2]) / axes[2]) ** 2 <= 1

    labels[ellipsoid((30, 10, -10), (25, 15, 22))] = 1  # IPH
    labels[ellipsoid((-8, -10, 0), (5, 18, 12))] = 2  # IVH, two horns
    labels[ellipsoid((8, -10, 0), (5, 18, 12))] = 2
    rng = np.random.default_rng(seed)
    for _ in range(60):  # SAH fragments
        labels[ellipsoid(rng.uniform([-80, -90, -60], [80, 90, 40]), rng.uniform(1.0, 4.0, 3))] = 3
    r = np.hypot(x, y)
    labels[(r >= 80) & (r <= 90) & (x < -40) & (np.abs(z + 10) <= 25)] = 4  # SDH crescent, left
    labels[ellipsoid((70, 60, 10), (6, 30, 25)) & (r <= 95)] = 5  # EDH lens
    return labels, affine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    labels, affine = make_label_map()
    result = measure_labels(labels, affine)  # warm-up
    times, cpu = [], []
    for _ in range(args.repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = measure_labels(labels, affine)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    print(f"label map {labels.shape} uint8, cores available: {len(os.sched_getaffinity(0))}")
    for key, entry in result.items():
        print(f"  {key:5s} {entry['voxel_count']:8d} voxels {entry['volume_ml']:8.2f} mL "
              f"{len(entry['hematomas']):3d} hematoma(s)  ABC/2 {entry['abc2_ml']}")
    print(f"measure_labels: wall median {np.median(times):.3f} s, min {min(times):.3f} s; CPU median"
          f" {np.median(cpu):.3f} s over {args.repeats} runs; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
