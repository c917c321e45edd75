"""Follow-up against baseline: rigid registration, volumes side by side, hematoma expansion flags.

Core of ``ichanalyzer compare BASELINE FOLLOWUP -o OUTDIR``. Volumes are measured on each scan's own grid
(true voxel size, as in ``analyze``); the registration (rigid, follow-up -> baseline) only serves to put
the follow-up label map onto the baseline grid for side-by-side review, and its quality is reported.

Expansion (thresholds below):
- classic (Dowlatshahi et al., Neurology 2011): IPH growth > 6 mL or > 33 % of the baseline IPH;
- revised (Yogendrakumar et al., Stroke 2020): classic, or new IVH (none at baseline), or IVH growth of
  at least 1 mL.
A flag is null (with a reason) when it cannot be decided, e.g. relative growth without a baseline IPH.
"""

from __future__ import annotations

import csv
import io as _io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk  # noqa: N813
from scipy import ndimage as ndi

from .constants import SUBTYPE_KEYS
from .errors import ModelError
from .volume import CTVolume

IPH_GROWTH_ML = 6.0  # absolute IPH growth strictly above this is expansion
IPH_GROWTH_FRACTION = 0.33  # relative IPH growth strictly above this is expansion
IVH_GROWTH_ML = 1.0  # revised definition: IVH growth of at least this much (or new IVH)
REGISTRATION_GRID_MM = 3.0
COMPARISON_SCHEMA = "ichanalyzer.comparison/1"


def rigid_register(baseline: CTVolume, baseline_brain: np.ndarray, followup: CTVolume,
                   followup_brain: np.ndarray) -> dict[str, Any]:
    """Rigid (6 parameters) registration, mutual information on brain-masked HU (3 mm LPS grids).

    Returns {"matrix": 4x4 baseline LPS -> follow-up LPS, "brain_dice": overlap of the two brain masks
    after registration (on the baseline's 3 mm grid), "seconds"}.
    """
    from .atlas import affine_matrix, ct_on_lps_grid, mattes_registration

    start = time.perf_counter()
    fixed, fixed_mask = ct_on_lps_grid(baseline, baseline_brain, REGISTRATION_GRID_MM)
    moving, moving_mask = ct_on_lps_grid(followup, followup_brain, REGISTRATION_GRID_MM)
    initial = sitk.CenteredTransformInitializer(
        sitk.Cast(fixed_mask, sitk.sitkFloat32), sitk.Cast(moving_mask, sitk.sitkFloat32),
        sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS)
    transform = sitk.Euler3DTransform(initial)
    reg = mattes_registration(transform, sampling=0.2, seed=11, learning_rate=2.0, min_step=1e-3,
                              iterations=150)
    reg.Execute(fixed, moving)
    matrix = affine_matrix(transform)
    # overlap of the brain masks once registered, on the baseline's grid
    base = sitk.GetArrayFromImage(fixed_mask).astype(bool)
    zz, yy, xx = np.indices(base.shape)
    points = np.stack([xx.ravel(), yy.ravel(), zz.ravel()], axis=1) * REGISTRATION_GRID_MM + np.array(
        fixed_mask.GetOrigin())
    mapped = points @ matrix[:3, :3].T + matrix[:3, 3]
    index = (mapped - np.array(moving_mask.GetOrigin())) / REGISTRATION_GRID_MM
    moving_array = sitk.GetArrayFromImage(moving_mask).astype(np.float32)
    moved = ndi.map_coordinates(moving_array, [index[:, 2], index[:, 1], index[:, 0]], order=1, cval=0.0)
    moved = moved.reshape(base.shape) > 0.5
    dice = float(2.0 * (moved & base).sum() / max(1, moved.sum() + base.sum()))
    return {"matrix": matrix, "brain_dice": dice, "seconds": time.perf_counter() - start}


def labels_onto(reference: CTVolume, source: CTVolume, labels: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``labels`` (on ``source``'s grid) resampled onto ``reference``'s grid, nearest neighbour;
    ``matrix`` maps reference LPS to source LPS."""
    nk, nj, ni = reference.shape
    out = np.zeros(reference.shape, dtype=np.uint8)
    jj, ii = np.mgrid[0:nj, 0:ni]
    for k in range(nk):
        points = reference.voxel_to_lps(np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, k)], axis=1))
        vox = source.lps_to_voxel(points @ matrix[:3, :3].T + matrix[:3, 3])
        values = ndi.map_coordinates(labels, [vox[:, 2], vox[:, 1], vox[:, 0]], order=0, cval=0)
        out[k] = values.reshape(nj, ni)
    return out


def expansion(baseline_volumes: dict, followup_volumes: dict) -> dict[str, Any]:
    """Hematoma expansion flags from two ``volumes`` report sections (see module docstring)."""
    iph0 = float(baseline_volumes["IPH"]["volume_ml"])
    iph1 = float(followup_volumes["IPH"]["volume_ml"])
    ivh0 = float(baseline_volumes["IVH"]["volume_ml"])
    ivh1 = float(followup_volumes["IVH"]["volume_ml"])
    growth = iph1 - iph0
    relative = growth / iph0 if iph0 > 0 else None
    notes = []
    absolute_flag = growth > IPH_GROWTH_ML
    relative_flag = None if relative is None else relative > IPH_GROWTH_FRACTION
    if relative is None:
        notes.append("no IPH at baseline: relative growth undefined")
    if absolute_flag or relative_flag:
        classic: bool | None = True
    elif relative_flag is None and iph1 > 0:
        classic = None  # new IPH of <= 6 mL: the relative criterion cannot be applied
        notes.append("new IPH at follow-up (none at baseline): classic expansion undecidable")
    else:
        classic = False
    new_ivh = ivh0 == 0.0 and ivh1 > 0.0
    ivh_growth = ivh1 - ivh0
    ivh_flag = new_ivh or ivh_growth >= IVH_GROWTH_ML
    revised = True if (classic or ivh_flag) else (None if classic is None else False)
    return {
        "iph_baseline_ml": round(iph0, 3), "iph_followup_ml": round(iph1, 3),
        "iph_growth_ml": round(growth, 3),
        "iph_growth_pct": None if relative is None else round(100.0 * relative, 1),
        "ivh_baseline_ml": round(ivh0, 3), "ivh_followup_ml": round(ivh1, 3),
        "ivh_growth_ml": round(ivh_growth, 3), "new_ivh": new_ivh,
        "expansion_classic": classic,
        "expansion_revised": revised,
        "definitions": {
            "classic": f"IPH growth > {IPH_GROWTH_ML:g} mL or > {100 * IPH_GROWTH_FRACTION:g} %",
            "revised": f"classic, or new IVH, or IVH growth >= {IVH_GROWTH_ML:g} mL",
        },
        "notes": notes,
    }


def compare_results(baseline: Any, followup: Any) -> tuple[dict[str, Any], np.ndarray]:
    """Compare two ``pipeline.AnalysisResult``; returns (comparison dict, follow-up labels on the
    baseline grid)."""
    registration = rigid_register(baseline.ct, baseline.brain, followup.ct, followup.brain)
    matrix = registration["matrix"]
    followup_on_baseline = labels_onto(baseline.ct, followup.ct, followup.labels, matrix)
    rotation_deg = float(np.degrees(np.arccos(np.clip((np.trace(matrix[:3, :3]) - 1) / 2, -1.0, 1.0))))
    volumes = []
    for key in (*SUBTYPE_KEYS, "total"):
        v0 = float(baseline.report["volumes"][key]["volume_ml"])
        v1 = float(followup.report["volumes"][key]["volume_ml"])
        volumes.append({"subtype": key, "baseline_ml": round(v0, 3), "followup_ml": round(v1, 3),
                        "change_ml": round(v1 - v0, 3),
                        "change_pct": None if v0 == 0 else round(100.0 * (v1 - v0) / v0, 1)})
    comparison = {
        "schema": COMPARISON_SCHEMA,
        "baseline": {"path": str(baseline.ct.source), "series_uid": baseline.ct.series_uid,
                     "source_of_labels": baseline.report["source_of_labels"]},
        "followup": {"path": str(followup.ct.source), "series_uid": followup.ct.series_uid,
                     "source_of_labels": followup.report["source_of_labels"]},
        "registration": {
            "method": "rigid (6 parameters), mutual information on brain-masked HU, 3 mm grids",
            "baseline_to_followup_lps": np.round(matrix, 6).tolist(),
            "rotation_deg": round(rotation_deg, 2),
            "translation_mm": round(float(np.linalg.norm(matrix[:3, 3])), 2),
            "brain_dice": round(registration["brain_dice"], 3),
            "seconds": round(registration["seconds"], 3),
        },
        "volumes": volumes,
        "expansion": expansion(baseline.report["volumes"], followup.report["volumes"]),
    }
    return comparison, followup_on_baseline


def comparison_csv_text(comparison: dict) -> str:
    """The volumes table of a comparison as CSV."""
    out = _io.StringIO()
    fields = ("subtype", "baseline_ml", "followup_ml", "change_ml", "change_pct")
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in comparison["volumes"]:
        writer.writerow(row)
    return out.getvalue()


def compare(baseline_path: str | Path, followup_path: str | Path, outdir: str | Path,
            baseline_mask: str | Path | None = None, followup_mask: str | Path | None = None,
            device: str = "auto", force: bool = False) -> dict[str, Any]:
    """CLI core: analyse both scans, register, compare; write OUTDIR atomically:
    comparison.json, comparison.csv, followup_labels_on_baseline.nii.gz (and each scan's report)."""
    from .io import load_ct, load_labelmap, write_labelmap_nifti
    from .pipeline import analyze_volume, prepare_outdir, write_outdir
    from .report import write_report

    outdir = Path(outdir)
    prepare_outdir(outdir, force)
    results = []
    for path, mask in ((baseline_path, baseline_mask), (followup_path, followup_mask)):
        ct = load_ct(path)
        labels = load_labelmap(mask, ct) if mask is not None else None
        result = analyze_volume(ct, labels=labels, device=device)
        if result.report["source_of_labels"] == "none":  # empty labels would read as 'no hemorrhage'
            raise ModelError(f"cannot compare {path}: {result.report['detection']['reason']}; "
                             "give --baseline-mask and --followup-mask")
        results.append(result)
    comparison, followup_on_baseline = compare_results(*results)

    def write(tmp: Path) -> None:
        (tmp / "comparison.json").write_text(json.dumps(comparison, indent=2, allow_nan=False) + "\n")
        (tmp / "comparison.csv").write_text(comparison_csv_text(comparison))
        write_labelmap_nifti(tmp / "followup_labels_on_baseline.nii.gz", followup_on_baseline, results[0].ct)
        for name, result in (("baseline", results[0]), ("followup", results[1])):
            (tmp / name).mkdir()
            write_report(result.report, tmp / name)

    write_outdir(outdir, write)
    return comparison
