"""Benchmark the whole pipeline on a real series: load, brain mask, model, volumetry, analyze end to end.

Prints wall times (median of --repeat runs) and the peak resident memory of this process.
    python scripts/bench_pipeline.py [--series ID_cd5a85fd] [--repeat 3]
Targets (2 CPU cores): load <= 1 s, brain mask <= 1 s, volumetry <= 0.3 s, analyze --mask <= 3 s,
analyze with the model <= 10 s and <= 3 GB.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "ICHAnalyzer"))

from ICHAnalyzerLib.brainmask import brain_mask  # noqa: E402
from ICHAnalyzerLib.io import load_ct, write_labelmap_nifti  # noqa: E402
from ICHAnalyzerLib.pipeline import analyze, measure  # noqa: E402


def timed(fn, repeat: int) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", default="ID_cd5a85fd")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    cache = subprocess.run([str(REPO.parent / "shared" / "tools" / "unpack-data")], check=True,
                           capture_output=True, text=True).stdout.strip().splitlines()[-1]
    folder = next(p for p in sorted((Path(cache) / "rsna").glob(args.series + "*")) if p.is_dir())
    print(f"series {folder.name}")
    t_load, ct = timed(lambda: load_ct(folder), args.repeat)
    print(f"load_ct              {t_load:6.3f} s   ({ct.shape[0]} slices {ct.shape[2]}x{ct.shape[1]})")
    t_brain, brain = timed(lambda: brain_mask(ct), args.repeat)
    print(f"brain mask           {t_brain:6.3f} s")
    # a label map with a blob per subtype inside the brain, to give volumetry real work
    import numpy as np
    from scipy import ndimage

    labels = np.zeros(ct.shape, np.uint8)
    centre = np.array(ndimage.center_of_mass(brain)).astype(int)
    offsets = [(0, -40, -40), (0, 40, 40), (2, -60, 60), (-2, 60, -60), (1, 0, 80)]
    for label, (dk, dj, di) in enumerate(offsets, start=1):
        k, j, i = centre + [dk, dj, di]
        labels[max(k - 2, 0):k + 3, j - 15:j + 15, i - 12:i + 12] = label
    labels[~brain] = 0
    t_vol, _ = timed(lambda: measure(ct, labels), args.repeat)
    print(f"volumetry + ABC/2    {t_vol:6.3f} s   (5 labels)")
    with tempfile.TemporaryDirectory() as tmp:
        mask = Path(tmp) / "mask.nii.gz"
        write_labelmap_nifti(mask, labels, ct)
        t_mask, _ = timed(lambda: analyze(folder, Path(tmp) / "out_mask", mask_path=mask, force=True),
                          args.repeat)
        print(f"analyze --mask       {t_mask:6.3f} s   (end to end, outputs written)")
        t_model, result = timed(lambda: analyze(folder, Path(tmp) / "out", device=args.device, force=True),
                                args.repeat)
        model = result.report["model"]
        name = model["name"] if model else "none installed"
        print(f"analyze (model)      {t_model:6.3f} s   model: {name}")
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"peak memory          {peak_gb:6.2f} GB (ru_maxrss of this process)")


if __name__ == "__main__":
    main()
