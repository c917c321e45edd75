"""Report building, validation (JSON Schema ``ichanalyzer.report/1``) and writing (JSON, CSV)."""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .constants import DETECTION_KEYS, REPORT_SCHEMA_ID, SUBTYPE_KEYS
from .volume import CTVolume


@lru_cache(maxsize=1)
def report_schema() -> dict:
    """The JSON Schema every report must satisfy."""
    text = resources.files(__package__).joinpath("schema/report.schema.json").read_text()
    return json.loads(text)


def validate_report(report: dict) -> None:
    """Raise ``jsonschema.ValidationError`` if ``report`` does not follow the schema."""
    import jsonschema

    jsonschema.Draft202012Validator(report_schema()).validate(report)


def null_detection(reason: str) -> dict[str, Any]:
    """Detection section when no model produced probabilities: nulls and the reason, never invented values."""
    return {**{key: None for key in DETECTION_KEYS}, "reason": reason}


def ventricle_prior_warning(report: dict) -> str | None:
    """The reader's warning when the model ran without its ventricle prior (IVH may then read as IPH)."""
    prior = (report.get("model") or {}).get("ventricle_prior") or ""
    if not prior.startswith("not applied"):
        return None
    return f"the ventricle prior was {prior}; blood in the ventricles may be labelled IPH"


def input_section(ct: CTVolume) -> dict[str, Any]:
    """The report's ``input`` section: where the image came from and its exact geometry."""
    dx, dy, dz = ct.spacing
    tilt = ct.tilt_deg
    if tilt > 0.01:
        grid = (f"sheared: gantry tilt {tilt:.1f} deg kept in the affine; slices are the input's "
                "slice planes, voxel depth is the distance between planes")
    else:
        grid = "orthogonal"
    if ct.resampling:
        grid += "; resampled along the slice normal (see resampling)"
    return {
        "path": str(ct.source),
        "series_uid": ct.series_uid,
        "size": [ct.shape[2], ct.shape[1], ct.shape[0]],
        "spacing_mm": [round(dx, 6), round(dy, 6), round(dz, 6)],
        "voxel_volume_mm3": round(ct.voxel_volume_mm3, 6),
        "tilt_deg": round(tilt, 3),
        "grid": grid,
        "affine_lps": np.round(ct.affine, 6).tolist(),
        "resampling": ct.resampling,
        "input_slice_count": len(ct.input_slices),
        "warnings": list(ct.warnings),
    }


def slices_section(ct: CTVolume, slice_probabilities: np.ndarray | None) -> list[dict[str, Any]]:
    """One entry per input slice, in input order; probabilities from the nearest grid slice (or null)."""
    entries = []
    nk = ct.shape[0]
    for s in ct.input_slices:
        if slice_probabilities is None or s.set_aside:
            probs = {key: None for key in DETECTION_KEYS}
        else:
            k = int(np.clip(round(s.grid_k), 0, nk - 1))
            row = slice_probabilities[k]
            probs = {key: round(float(p), 4) for key, p in zip(DETECTION_KEYS, row, strict=True)}
        entries.append({
            "index": s.index,
            "z_mm": round(float(s.z_mm), 3),
            "grid_k": round(float(s.grid_k), 3),
            "sop_instance_uid": s.sop_instance_uid,
            "set_aside": bool(s.set_aside),
            "probabilities": probs,
        })
    return entries


def build_report(
    ct: CTVolume,
    volumes: dict[str, dict],
    detection: dict[str, Any],
    slice_probabilities: np.ndarray | None,
    intracranial_volume_ml: float | None,
    source_of_labels: str,
    model: dict[str, str] | None,
    timing_s: dict[str, float],
) -> dict[str, Any]:
    """Assemble a complete report (validated by the caller with :func:`validate_report`)."""
    return {
        "schema": REPORT_SCHEMA_ID,
        "software": {"name": "ICHAnalyzer", "version": __version__},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "input": input_section(ct),
        "model": model,
        "detection": detection,
        "slices": slices_section(ct, slice_probabilities),
        "volumes": volumes,
        "brain": {"intracranial_volume_ml": None if intracranial_volume_ml is None
                  else round(float(intracranial_volume_ml), 1)},
        "source_of_labels": source_of_labels,
        "timing_s": {k: round(float(v), 3) for k, v in timing_s.items()},
    }


CSV_COLUMNS = (
    "level", "subtype", "hematoma_id", "probability", "voxel_count", "volume_ml", "abc2_ml",
    "abc2_unweighted_ml", "abc2_difference_pct", "abc2_clinically_applicable", "A_mm", "B_mm", "C_mm",
    "abc2_slice_index", "max_thickness_mm",
    # hematoma rows: atlas location (clinical section); total row: scan-level clinical measures
    "region", "side", "midline_shift_mm", "midline_shift_reliable", "ich_score", "intracranial_volume_ml",
)


def _csv_row(level: str, key: str, hid: Any, prob: Any, entry: dict, applicable: Any) -> dict[str, Any]:
    abc2 = entry.get("abc2") or {}
    return {
        "level": level, "subtype": key, "hematoma_id": hid, "probability": prob,
        "voxel_count": entry.get("voxel_count"), "volume_ml": entry.get("volume_ml"),
        "abc2_ml": entry.get("abc2_ml"), "abc2_unweighted_ml": entry.get("abc2_unweighted_ml"),
        "abc2_difference_pct": entry.get("abc2_difference_pct"), "abc2_clinically_applicable": applicable,
        "A_mm": abc2.get("A_mm"), "B_mm": abc2.get("B_mm"), "C_mm": abc2.get("C_mm"),
        "abc2_slice_index": abc2.get("slice_index"), "max_thickness_mm": entry.get("max_thickness_mm"),
    }


def report_csv_text(report: dict) -> str:
    """The report as CSV: one row per subtype and the total (with the scan's midline shift, ICH score and
    intracranial volume), then one row per hematoma (with its atlas region and side when located)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    volumes = report["volumes"]
    detection = report["detection"]
    clinical = report.get("clinical") or {}
    shift = clinical.get("midline_shift") or {}
    score = clinical.get("ich_score") or {}
    places = {(h["subtype"], h["id"]): h for h in (clinical.get("location") or {}).get("hematomas", [])}
    for key in (*SUBTYPE_KEYS, "total"):
        entry = volumes[key]
        prob = detection.get("any" if key == "total" else key)
        row = _csv_row("scan", key, "", "" if prob is None else prob, entry,
                       entry.get("abc2_clinically_applicable"))
        if key == "total":
            row.update({"midline_shift_mm": shift.get("shift_mm"),
                        "midline_shift_reliable": shift.get("reliable"), "ich_score": score.get("score"),
                        "intracranial_volume_ml": (report.get("brain") or {}).get("intracranial_volume_ml")})
        writer.writerow(row)
    for key in SUBTYPE_KEYS:
        for hem in volumes[key]["hematomas"]:
            row = _csv_row("hematoma", key, hem["id"], "", hem,
                           volumes[key].get("abc2_clinically_applicable"))
            place = places.get((key, hem["id"])) or {}
            row.update({"region": place.get("region"), "side": place.get("side")})
            writer.writerow(row)
    return out.getvalue()


def write_report(report: dict, outdir: Path) -> None:
    """Write ``report.json`` and ``report.csv`` into ``outdir`` (the caller makes the folder atomic)."""
    outdir = Path(outdir)
    (outdir / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    (outdir / "report.csv").write_text(report_csv_text(report))
