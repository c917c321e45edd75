"""Midline-shift validation: normal real series, and the same series with simulated shifts.

For every real series (../shared, unpacked with tools/unpack-data) prints the measured midline shift;
for the normal ones with a reliably measured septum, pushes the midline structures by 3, 5, 8 and 12 mm
(alternately toward the patient's left and right) with ``measures.simulate_midline_shift`` (a smooth
Gaussian displacement field centred on the septum), recomputes the brain mask, the registration and
the shift, and compares it with the truth: the original septum rows on the same slice, each moved
by the simulated field (exact fixed point), summarised by the same statistic. Prints Markdown tables
(used in docs/clinical-measures.md).

    ICH_SHARED_DIR=/work/shared python scripts/study_midline.py [--shifts 3 5 8 12] [--series PREFIX ...]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ICHAnalyzer"))

from ICHAnalyzerLib import atlas as atlas_module  # noqa: E402
from ICHAnalyzerLib import measures  # noqa: E402
from ICHAnalyzerLib.brainmask import brain_mask  # noqa: E402
from ICHAnalyzerLib.io import load_ct  # noqa: E402
from shared_data import shared_cache  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def landmarks(ct, plane, result, registration) -> tuple[str, str]:
    """Registration landmarks: the scan's symmetry plane (100 x 60 mm patch) mapped into MNI (mean |x|,
    0 when it lands on the template's mid-sagittal plane) and the septum point in MNI (RAS) mm."""
    if registration is None:
        return "-", "-"
    u = np.cross(plane["normal"], ct.slice_normal)
    u /= np.linalg.norm(u)
    v = np.cross(plane["normal"], u)
    offsets = np.array([(a, b) for a in range(-50, 51, 10) for b in range(-30, 31, 10)], float)
    points = plane["point"] + offsets[:, :1] * u + offsets[:, 1:] * v
    plane_x = f"{np.abs(registration.to_template(points)[:, 0]).mean():.2f}"
    if result["septum_point_lps"] is None:
        return plane_x, "-"
    x, y, z = registration.to_template(result["septum_point_lps"])[0] * np.array([-1.0, -1.0, 1.0])
    return plane_x, f"({x:.1f}, {y:.1f}, {z:.1f})"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shifts", type=float, nargs="*", default=[3.0, 5.0, 8.0, 12.0])
    parser.add_argument("--series", nargs="*", default=None, help="series folder prefixes (default: all)")
    args = parser.parse_args()
    cache = shared_cache()
    with open(cache / "rsna" / "series.csv") as f:
        table = {row["series_dir"]: row for row in csv.DictReader(f)}
    folders = sorted((cache / "rsna").glob("ID_*")) + sorted((cache / "rsna-unlabelled").glob("ID_*"))
    folders = [p for p in folders if p.is_dir()]
    if args.series:
        folders = [p for p in folders if any(p.name.startswith(s) for s in args.series)]
    folder = atlas_module.find_templates()
    atlas = atlas_module.load_atlas(folder) if folder else None

    print("| series | tilt | finding (RSNA) | shift mm (signed, + = to patient left) | slice | septum mm "
          "| reliable | brain Dice | midline plane in MNI: mean abs x mm | septum in MNI (x, y, z) | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    normals = []
    for path in folders:
        row = table.get(path.name)
        finding = "unlabelled" if row is None else ("normal" if row["positive_slices_any"] == "0" else
                                                    "hemorrhage")
        ct = load_ct(path)
        brain = brain_mask(ct)
        t0 = time.perf_counter()
        plane = measures.symmetry_plane(ct, brain)
        registration = atlas_module.register(ct, brain, atlas, midline=plane) if atlas else None
        result = measures.midline_shift(ct, brain, registration, plane)
        seconds = time.perf_counter() - t0
        dice = f"{registration.brain_dice:.3f}" if registration else "-"
        plane_x, septum_mni = landmarks(ct, plane, result, registration)
        print(f"| {path.name[:11]} | {ct.tilt_deg:.1f} | {finding} | {result['signed_shift_mm']} | "
              f"{result['slice_index']} | {result.get('septum_length_mm')} | {result['reliable']} | {dice} | "
              f"{plane_x} | {septum_mni} | {seconds:.2f} |", flush=True)
        if finding == "normal" and result["signed_shift_mm"] is not None and result["reliable"]:
            normals.append((path, ct, brain, result, registration))

    if not args.shifts:
        return
    print("\n| series | applied mm (septum centre) | septum moved mm | expected mm | measured mm | error mm "
          "| slice | reliable | measured - (baseline + applied) mm |")
    print("|---|---|---|---|---|---|---|---|---|")
    errors = []
    naive_errors = []
    for n_series, (path, ct, brain, base, base_registration) in enumerate(normals):
        plane = {"point": np.array(base["ideal_midline"]["point_lps"]),
                 "normal": np.array(base["ideal_midline"]["normal_lps"])}
        centre = np.array(base["septum_point_lps"])
        for n_shift, size in enumerate(args.shifts):
            sign = 1.0 if (n_series + n_shift) % 2 == 0 else -1.0
            shifted, field = measures.simulate_midline_shift(ct, brain, centre, plane["normal"], sign * size)
            moved = field.displacement(centre)
            brain_s = brain_mask(shifted)
            plane_s = measures.symmetry_plane(shifted, brain_s)
            registration = atlas_module.register(shifted, brain_s, atlas, midline=plane_s) if atlas else None
            result = measures.midline_shift(shifted, brain_s, registration, plane_s)
            measured = result["signed_shift_mm"]
            expected = None
            if result["slice_index"] is not None:
                expected = measures.expected_shift_on_slice(ct, brain, plane, result["slice_index"], field,
                                                            base_registration)
            error = None if measured is None or expected is None else measured - expected
            naive = None if measured is None else measured - (base["signed_shift_mm"] + sign * size)
            if error is not None:
                errors.append(error)
                naive_errors.append(naive)
            print(f"| {path.name[:11]} | {sign * size:+.0f} | {moved:+.2f} | {_fmt(expected)} | "
                  f"{_fmt(measured)} | {_fmt(error)} | {result['slice_index']} | {result['reliable']} | "
                  f"{_fmt(naive)} |",
                  flush=True)
    if errors:
        errors_a = np.abs(np.array(errors))
        print(f"\n{len(errors)} simulated shifts: mean |error| {errors_a.mean():.2f} mm, "
              f"max {errors_a.max():.2f} mm, within 1 mm: {(errors_a <= 1.0).sum()}/{len(errors)}")
        naive_a = np.abs(np.array(naive_errors))
        print(f"against baseline + applied shift: mean |error| {naive_a.mean():.2f} mm, "
              f"max {naive_a.max():.2f} mm, within 1 mm: {(naive_a <= 1.0).sum()}/{len(naive_errors)}")


if __name__ == "__main__":
    main()
