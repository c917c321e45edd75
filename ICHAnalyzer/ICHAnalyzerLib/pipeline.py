"""The analysis pipeline shared by the CLI and the Slicer module.

``analyze_volume`` works in memory on a :class:`CTVolume`; ``analyze`` adds loading and writes the output
folder atomically (a temporary sibling folder renamed into place: nothing half-written after an error
or Ctrl-C).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .constants import DETECTION_KEYS, MAX_LABEL
from .errors import InputError, ModelError, OutputError
from .report import build_report, null_detection, validate_report, write_report
from .volume import CTVolume

ProgressCallback = Callable[[str, float], None]

OUTPUT_FILES = ("labelmap.nii.gz", "segmentation.seg.nrrd", "report.json", "report.csv")


@dataclass
class AnalysisResult:
    """Everything one analysis produced, on the CT's grid."""

    ct: CTVolume
    labels: np.ndarray  # uint8 [k, j, i]
    brain: np.ndarray  # bool [k, j, i]
    report: dict
    timing_s: dict[str, float] = field(default_factory=dict)


def _notify(progress: ProgressCallback | None, step: str, fraction: float) -> None:
    if progress is not None:
        progress(step, fraction)


def measure(ct: CTVolume, labels: np.ndarray) -> dict:
    """The report's ``volumes`` section recomputed from a label map on ``ct``'s grid (e.g. after edits)."""
    from .volumetry import measure_labels

    check_labels(labels, ct)
    return measure_labels(np.asarray(labels, dtype=np.uint8), ct.affine)


def check_labels(labels: np.ndarray, ct: CTVolume) -> None:
    """Raise InputError unless ``labels`` is an integer label map on ``ct``'s grid with known labels."""
    if tuple(labels.shape) != ct.shape:
        raise InputError(f"label map shape {tuple(labels.shape)} differs from the CT grid {ct.shape}")
    if not np.issubdtype(labels.dtype, np.integer) and not np.issubdtype(labels.dtype, np.bool_):
        raise InputError(f"label map must hold integers, got {labels.dtype}")
    top = int(labels.max(initial=0))
    low = int(labels.min(initial=0))
    if low < 0 or top > MAX_LABEL:
        raise InputError(f"label map values must be 0..{MAX_LABEL} (1 IPH, 2 IVH, 3 SAH, 4 SDH, 5 EDH); "
                         f"found {low}..{top}")


# the ventricle prior needs a registration that overlays the template brain on the scan's (measured
# 0.78-0.92 on the 16 real series, docs/clinical-measures.md); below this it is not applied
VENTRICLE_PRIOR_MIN_BRAIN_DICE = 0.7


@dataclass
class VentriclePrior:
    """The ventricle mask the model gets (None when the prior cannot be applied) and the report's text."""

    mask: np.ndarray | None
    note: str  # "applied: ..." or "not applied: <reason>"
    template: Any  # measures.TemplateRegistration, reused by the clinical measures


def ventricle_prior(ct: CTVolume, brain: np.ndarray) -> VentriclePrior:
    """Register the scan to the template and map the atlas ventricles onto its grid, when the template
    files exist and the registration overlays the template brain on the scan's."""
    from .atlas import region_mask
    from .measures import register_to_template

    template = register_to_template(ct, brain)
    if template.registration is None:
        return VentriclePrior(None, f"not applied: {template.reason}", template)
    dice = template.registration.brain_dice
    if dice < VENTRICLE_PRIOR_MIN_BRAIN_DICE:
        return VentriclePrior(None, f"not applied: registration to the template unreliable (brain Dice "
                                    f"{dice:.2f} < {VENTRICLE_PRIOR_MIN_BRAIN_DICE})", template)
    mask = region_mask(ct, brain, template.registration, template.atlas, "ventricular")
    note = ("applied: IPH inside the BLAST-CT atlas ventricles (affine registration) counted as IVH "
            f"({mask.sum() * ct.voxel_volume_mm3 / 1000.0:.1f} mL of ventricles)")
    return VentriclePrior(mask, note, template)


@dataclass
class ModelRun:
    """What running the installed model gave: a prediction, or the reason there is none."""

    prediction: Any = None
    reason: str | None = None
    device: str | None = None
    prior: VentriclePrior | None = None  # when the model asks for the ventricle prior


def _run_model(ct: CTVolume, brain: np.ndarray, device: str, progress: ProgressCallback | None) -> ModelRun:
    """Run the installed model; without one, say why. When the model's ``detection.ventricle_prior`` is
    set, the scan is registered to the template first and IPH inside the atlas ventricles counts as IVH."""
    try:
        from . import inference
    except ImportError as exc:
        return ModelRun(reason=f"the model cannot run: {exc.name or exc} is not installed")
    if not inference.available_models():
        return ModelRun(reason="no model is installed (Models.json lists none)")
    model = inference.load_model(device=device)  # ModelError (missing/corrupt weights) propagates
    prior = None
    if model.uses_ventricle_prior:
        _notify(progress, "registration to the template", 0.15)
        prior = ventricle_prior(ct, brain)
    prediction = inference.predict(ct, brain, model, progress=progress,
                                   ventricles=None if prior is None else prior.mask)
    return ModelRun(prediction=prediction, device=str(model.device), prior=prior)


def clinical(ct: CTVolume, labels: np.ndarray, brain: np.ndarray, volumes: dict, source_of_labels: str,
             gcs: int | None = None, age: int | None = None, template: Any = None) -> dict | None:
    """The report's ``clinical`` section (midline shift, location, ICH score), or None when no labels
    exist to measure (no model ran): an empty label map must not read as 'no hemorrhage'."""
    if source_of_labels == "none":
        return None
    from .measures import clinical_measures

    return clinical_measures(ct, labels, brain, volumes, gcs=gcs, age=age, template=template)


def analyze_volume(
    ct: CTVolume,
    labels: np.ndarray | None = None,
    device: str = "auto",
    progress: ProgressCallback | None = None,
    gcs: int | None = None,
    age: int | None = None,
) -> AnalysisResult:
    """Analyse ``ct``: brain mask, model (unless ``labels`` is given), volumetry and ABC/2, clinical
    measures, report. ``gcs`` and ``age`` complete the ICH score; without them it says what is missing."""
    from .brainmask import brain_mask, intracranial_volume_ml
    from .measures import check_gcs_age

    check_gcs_age(gcs, age)  # before any work, and even when no labels exist to score
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    _notify(progress, "brain mask", 0.05)
    brain = brain_mask(ct)
    timing["brain_mask"] = time.perf_counter() - t0

    slice_probs = None
    model_info = None
    template = None
    if labels is not None:
        check_labels(labels, ct)
        labels = np.asarray(labels, dtype=np.uint8)
        source = "mask"
        detection = null_detection("labels were given (--mask): the model was not run")
    else:
        t1 = time.perf_counter()
        _notify(progress, "model", 0.15)
        run = _run_model(ct, brain, device, progress)
        template = None if run.prior is None else run.prior.template
        prediction = run.prediction
        timing["model"] = time.perf_counter() - t1
        if template is not None:  # made for the ventricle prior, reused by the clinical measures
            timing["registration"] = sum(template.timing.values())
            timing["model"] -= timing["registration"]
        if prediction is None:
            labels = np.zeros(ct.shape, dtype=np.uint8)
            source = "none"
            detection = null_detection(run.reason)
        else:
            labels = np.asarray(prediction.labels, dtype=np.uint8)
            source = "model"
            slice_probs = np.asarray(prediction.slice_probabilities, dtype=float)
            detection = {key: round(float(prediction.scan_probabilities[key]), 4) for key in DETECTION_KEYS}
            detection["reason"] = None
            model_info = {"name": prediction.model_name, "version": prediction.model_version,
                          "device": run.device}
            if run.prior is not None:
                model_info["ventricle_prior"] = run.prior.note

    t2 = time.perf_counter()
    _notify(progress, "volumetry", 0.9)
    volumes = measure(ct, labels)
    timing["volumetry"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    _notify(progress, "clinical measures", 0.92)
    clinical_section = clinical(ct, labels, brain, volumes, source, gcs=gcs, age=age, template=template)
    timing["clinical"] = time.perf_counter() - t3
    timing["total"] = time.perf_counter() - t0
    report = build_report(ct, volumes, detection, slice_probs, intracranial_volume_ml(brain, ct), source,
                          model_info, timing)
    report["clinical"] = clinical_section
    validate_report(report)
    _notify(progress, "done", 1.0)
    return AnalysisResult(ct=ct, labels=labels, brain=brain, report=report, timing_s=timing)


def write_images(result: AnalysisResult, folder: Path) -> None:
    """Write the label map and the Slicer segmentation (and the resampled CT, if any) into ``folder``."""
    from .io import write_ct, write_labelmap_nifti, write_segmentation_nrrd

    write_labelmap_nifti(folder / "labelmap.nii.gz", result.labels, result.ct)
    write_segmentation_nrrd(folder / "segmentation.seg.nrrd", result.labels, result.ct)
    if result.ct.resampling:
        # the label map lies on the resampled grid: give it the CT it lines up with
        write_ct(folder / "ct_resampled.nii.gz", result.ct)


def prepare_outdir(outdir: Path, force: bool) -> None:
    """Refuse an existing output folder unless ``force``; check its parent can be written."""
    if outdir.exists() and not force:
        raise OutputError(f"output folder {outdir} already exists (use --force to replace it)")
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"output path {outdir} exists and is not a folder")
    parent = outdir.resolve().parent
    if not parent.is_dir():
        raise OutputError(f"cannot create {outdir}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write into {parent}")


def commit_outdir(tmp: Path, outdir: Path) -> None:
    """Move a completely written temporary folder into place, replacing ``outdir`` only at the end."""
    old = None
    if outdir.exists():
        old = outdir.with_name(f".{outdir.name}.old-{os.getpid()}")
        os.replace(outdir, old)
    os.replace(tmp, outdir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_outdir(outdir: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(folder)`` on a temporary sibling folder, then move it onto ``outdir``: after an error
    or Ctrl-C nothing is half-written; file system errors become one-line :class:`OutputError`."""
    parent = outdir.resolve().parent
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.tmp-", dir=parent))
    except OSError as exc:
        raise OutputError(f"cannot write into {parent}: {exc.strerror or exc}") from None
    try:
        write(tmp)
        commit_outdir(tmp, outdir)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"cannot write {outdir}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def analyze(
    input_path: str | Path,
    outdir: str | Path,
    mask_path: str | Path | None = None,
    device: str = "auto",
    force: bool = False,
    series_uid: str | None = None,
    progress: ProgressCallback | None = None,
    gcs: int | None = None,
    age: int | None = None,
) -> AnalysisResult:
    """Load ``input_path``, analyse it and write ``outdir`` atomically (see module docstring)."""
    from .io import load_ct, load_labelmap
    from .measures import check_gcs_age

    check_gcs_age(gcs, age)
    outdir = Path(outdir)
    prepare_outdir(outdir, force)
    if device not in ("auto", "cpu", "cuda"):
        raise ModelError(f"unknown device {device!r}: use auto, cpu or cuda")
    t0 = time.perf_counter()
    _notify(progress, "loading", 0.0)
    ct = load_ct(input_path, series_uid=series_uid)
    load_s = time.perf_counter() - t0
    labels = load_labelmap(mask_path, ct) if mask_path is not None else None
    result = analyze_volume(ct, labels=labels, device=device, progress=progress, gcs=gcs, age=age)
    result.report["timing_s"] = {"load": round(load_s, 3), **result.report["timing_s"]}

    def write(tmp: Path) -> None:
        _notify(progress, "writing", 0.95)
        t1 = time.perf_counter()
        write_images(result, tmp)
        result.report["timing_s"]["write"] = round(time.perf_counter() - t1, 3)
        result.report["timing_s"]["end_to_end"] = round(time.perf_counter() - t0, 3)
        write_report(result.report, tmp)  # last, so that it carries the final timings

    write_outdir(outdir, write)
    return result
