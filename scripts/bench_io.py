#!/usr/bin/env python
"""Benchmark ``load_ct`` on the real series (target: <= 1 s for the 33-slice ID_cd5a85fd on 2 cores).

Also prints, per geometry-problem series, the voxel-volume error of ``load_ct`` and of SimpleITK's
``ImageSeriesReader`` against the true pixel area x distance between slice planes (from the raw tags).

Usage: python scripts/bench_io.py [--cache DIR] [--repeat N] [--no-sitk]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "ICHAnalyzer"))

from ICHAnalyzerLib.io import load_ct  # noqa: E402
from shared_data import find_series, shared_cache  # noqa: E402

SERIES = ["ID_cd5a85fd", "ID_73637515", "ID_ee4d05e4", "ID_21cbc42c", "ID_8c5a14af", "ID_462abff7"]


def true_voxel_volume(folder: Path, mean: bool = False) -> float:
    """Pixel area x median (or mean) distance between distinct slice planes, from the raw tags."""
    import pydicom

    with warnings.catch_warnings(), pydicom.config.disable_value_validation():
        warnings.simplefilter("ignore")
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in folder.glob("*.dcm")]
    iop = np.array(headers[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    z = np.unique(np.round([np.array(h.ImagePositionPatient, float) @ normal for h in headers], 2))
    dy, dx = (float(v) for v in headers[0].PixelSpacing)
    return dx * dy * float(np.mean(np.diff(z)) if mean else np.median(np.diff(z)))


def sitk_voxel_volume(folder: Path) -> float:
    import SimpleITK as sitk  # noqa: N813

    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return float(abs(np.linalg.det(direction * np.array(image.GetSpacing()))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="unpacked shared data (default: run ../shared/tools/unpack-data)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-sitk", action="store_true", help="skip the SimpleITK comparison")
    args = parser.parse_args()
    cache = shared_cache(args.cache)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs visible")
    print(f"{'series':<13}{'slices in':>10}{'grid':>16}{'first s':>9}{'median s':>10}{'max s':>8}")
    for prefix in SERIES:
        folder = find_series(cache, prefix)
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            ct = load_ct(folder)
            times.append(time.perf_counter() - start)
        n_in = len(list(folder.glob("*.dcm")))
        print(f"{prefix:<13}{n_in:>10}{str(ct.shape):>16}{times[0]:>9.3f}{statistics.median(times):>10.3f}"
              f"{max(times):>8.3f}")
    if args.no_sitk:
        return
    print("\nvoxel volume error vs the true pixel area x median (mean) plane distance from the raw tags;")
    print("resampled series: head (HU > -300) volume on the grid vs the input slices as slabs")
    print(f"{'series':<13}{'load_ct':>10}{'(vs mean)':>10}{'SimpleITK':>11}   what load_ct did")
    for prefix in SERIES:
        folder = find_series(cache, prefix)
        ct = load_ct(folder)
        sitk_error = (sitk_voxel_volume(folder) / true_voxel_volume(folder) - 1) * 100
        if ct.resampling is None:
            ours = (ct.voxel_volume_mm3 / true_voxel_volume(folder) - 1) * 100
            ours_mean = f"{(ct.voxel_volume_mm3 / true_voxel_volume(folder, mean=True) - 1) * 100:+9.2f}%"
            note = f"tilt {ct.tilt_deg:.1f} deg, sheared grid" if ct.tilt_deg > 0.5 else "regular grid"
            if any(s.set_aside for s in ct.input_slices):
                note += f", {sum(s.set_aside for s in ct.input_slices)} duplicate images set aside"
        else:
            ours = (head_volume_resampled(ct) / head_volume_input(folder) - 1) * 100
            ours_mean = ""
            note = f"resampled to {ct.spacing[2]:.2f} mm (head volume kept)"
        print(f"{prefix:<13}{ours:>+9.2f}%{ours_mean:>10}{sitk_error:>+10.1f}%   {note}")


def head_volume_resampled(ct) -> float:
    return float(np.count_nonzero(ct.hu > -300) * ct.voxel_volume_mm3)


def head_volume_input(folder: Path) -> float:
    """Head volume from the input slices, each a slab reaching halfway to its neighbours (raw pydicom)."""
    import pydicom

    with warnings.catch_warnings(), pydicom.config.disable_value_validation():
        warnings.simplefilter("ignore")
        datasets = [pydicom.dcmread(p) for p in folder.glob("*.dcm")]
    iop = np.array(datasets[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    datasets.sort(key=lambda d: np.array(d.ImagePositionPatient, float) @ normal)
    z = np.array([np.array(d.ImagePositionPatient, float) @ normal for d in datasets])
    dy, dx = (float(v) for v in datasets[0].PixelSpacing)
    hu = [d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in datasets]
    areas = np.array([np.count_nonzero(h > -300) for h in hu]) * dx * dy
    edges = np.concatenate([[z[0] - (z[1] - z[0]) / 2], (z[1:] + z[:-1]) / 2, [z[-1] + (z[-1] - z[-2]) / 2]])
    return float(np.sum(areas * np.diff(edges)))

if __name__ == "__main__":
    main()
