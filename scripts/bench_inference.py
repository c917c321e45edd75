#!/usr/bin/env python
"""End-to-end inference benchmark: load a series, brain mask, load the model, predict; wall time and peak RSS.

Target: ID_cd5a85fd (512x512x33) predict <= 10 s wall and <= 3 GB peak (ru_maxrss) on 2 CPU cores.
  python scripts/bench_inference.py [--series ID_cd5a85fd] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "ICHAnalyzer"))


def main() -> None:
    warnings.filterwarnings("ignore", module="pydicom")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--series", default="ID_cd5a85fd")
    p.add_argument("--data", type=Path,
                   default=Path(os.environ.get("ICH_SHARED_CACHE",
                                               Path.home() / ".cache" / "ichanalyzer-shared")))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from ICHAnalyzerLib.brainmask import brain_mask
    from ICHAnalyzerLib.inference import load_model, predict
    from ICHAnalyzerLib.io import load_ct

    folder = next(d for d in sorted((args.data / "rsna").glob(args.series + "*")) if d.is_dir())
    t0 = time.perf_counter()
    ct = load_ct(folder)
    t1 = time.perf_counter()
    brain = brain_mask(ct)
    t2 = time.perf_counter()
    model = load_model(device=args.device)
    t3 = time.perf_counter()
    ventricles, registration_s = None, 0.0
    if model.uses_ventricle_prior:  # as the pipeline does before predicting
        from ICHAnalyzerLib.pipeline import ventricle_prior

        ventricles = ventricle_prior(ct, brain).mask
        registration_s = time.perf_counter() - t3
    times = []
    for _ in range(args.repeat):
        s = time.perf_counter()
        pred = predict(ct, brain, model, ventricles=ventricles)
        times.append(time.perf_counter() - s)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    load1, load5, _ = os.getloadavg()
    print(f"series {folder.name} shape {ct.shape} model {model.name} {model.version} threads {args.threads}")
    print(f"load_ct {t1 - t0:.2f} s, brain_mask {t2 - t1:.2f} s, load_model {t3 - t2:.2f} s")
    print(f"predict wall: first {times[0]:.2f} s, best {min(times):.2f} s (target <= 10 s)")
    print(f"registration + ventricle mask (ventricle prior): {registration_s:.2f} s")
    print(f"end to end (load + mask + model + registration + first predict): "
          f"{t3 - t0 + registration_s + times[0]:.2f} s")
    print(f"peak RSS {peak_gb:.2f} GB (target <= 3 GB); CPU load average 1/5 min {load1:.1f}/{load5:.1f}")
    print(f"scan any={pred.scan_probabilities['any']:.3f} labelled voxels={(pred.labels > 0).sum()}")


if __name__ == "__main__":
    main()
