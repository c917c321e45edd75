#!/usr/bin/env python
"""Benchmark ``brain_mask`` (target: <= 1 s for the 33-slice 512x512 ID_cd5a85fd on 2 cores).

Prints the per-call time (median and min over ``--repeat`` runs after one warm-up) and the intracranial
volume, on the given real series and on the built-in phantom.

Usage: python scripts/bench_brainmask.py [--cache DIR] [--repeat N] [--series PREFIX ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "ICHAnalyzer"))

from ICHAnalyzerLib.brainmask import brain_mask, intracranial_volume_ml  # noqa: E402
from ICHAnalyzerLib.io import load_ct  # noqa: E402
from ICHAnalyzerLib.phantom import make_phantom  # noqa: E402
from shared_data import find_series, shared_cache  # noqa: E402


def bench(ct: object, repeat: int) -> tuple[float, float, float]:
    mask = brain_mask(ct)  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        mask = brain_mask(ct)
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), intracranial_volume_ml(mask, ct)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="unpacked shared data (default: run ../shared/tools/unpack-data)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--series", nargs="*", default=["ID_cd5a85fd"])
    args = parser.parse_args()
    print(f"threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, cpus={os.cpu_count()}")
    cache = shared_cache(args.cache)
    for prefix in args.series:
        ct = load_ct(find_series(cache, prefix))
        median, best, icv = bench(ct, args.repeat)
        print(f"{prefix}: {ct.shape[0]}x{ct.shape[1]}x{ct.shape[2]}  brain_mask median {median:.3f} s "
              f"(min {best:.3f} s, {args.repeat} runs)  ICV {icv:.0f} mL")
    phantom = make_phantom(seed=0)
    median, best, icv = bench(phantom.ct, args.repeat)
    print(f"phantom 32x256x256: brain_mask median {median:.3f} s (min {best:.3f} s)  ICV {icv:.0f} mL "
          f"(analytic {phantom.intracranial_volume_ml:.0f} mL)")
    start = time.perf_counter()
    make_phantom(seed=1)
    print(f"make_phantom 32x256x256: {time.perf_counter() - start:.3f} s")


if __name__ == "__main__":
    main()
