"""ICHAnalyzer module logic without any GUI: run, load results into the scene, recompute after edits, export.

Every result hangs off the segmentation node made for an input volume: node attributes keep the model's
report and a fingerprint of its label map (to detect edits), node references point to the input volume,
the tables, the chart and the ABC/2 line markups.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import slicer
from ICHAnalyzerLib.constants import SUBTYPE_KEYS, SUBTYPES
from ICHAnalyzerLib.errors import ICHAnalyzerError, InputError, OutputError
from ICHAnalyzerLib.volume import CTVolume

from . import mrml
from .process import BackgroundJob, worker_command

RESULT_ATTRIBUTE = "ICHAnalyzer.Result"
MODEL_DIGEST_ATTRIBUTE = "ICHAnalyzer.ModelLabelsDigest"
MODEL_REPORT_ATTRIBUTE = "ICHAnalyzer.ModelReport"
REPORT_ATTRIBUTE = "ICHAnalyzer.Report"
INPUT_ROLE = "ichanalyzerInput"
DETECTION_TABLE_ROLE = "ichanalyzerDetectionTable"
VOLUMES_TABLE_ROLE = "ichanalyzerVolumesTable"
SLICE_TABLE_ROLE = "ichanalyzerSliceTable"
CHART_ROLE = "ichanalyzerChart"
LINE_ROLE = "ichanalyzerLine"
COMPARISON_TABLE_ROLE = "ichanalyzerComparisonTable"
COMPARISON_ATTRIBUTE = "ICHAnalyzer.Comparison"

# import name -> pip requirement; the core's dependencies that Slicer's Python may lack
DEPENDENCIES = {
    "numpy": "numpy",
    "scipy": "scipy",
    "SimpleITK": "SimpleITK",
    "pydicom": "pydicom",
    "nibabel": "nibabel",
    "nrrd": "pynrrd",
    "slicerio": "slicerio",
    "jsonschema": "jsonschema",
    "tqdm": "tqdm",
    "torch": "torch",
    "monai": "monai",
}


class EditsWouldBeLostError(ICHAnalyzerError):
    """Analysing again would replace a segmentation that the user edited."""


@dataclass
class ResultNodes:
    """The scene nodes that show one analysis."""

    segmentation: object
    detection_table: object
    volumes_table: object
    slice_table: object
    chart: object
    lines: dict[str, object] = field(default_factory=dict)


def missing_dependencies() -> list[str]:
    """Import names of the core's dependencies that cannot be imported in this Python."""
    import importlib.util

    return [name for name in DEPENDENCIES if importlib.util.find_spec(name) is None]


def pip_requirements(import_names: list[str]) -> list[str]:
    """pip requirement names for missing import names (torch excluded: installed separately)."""
    return [DEPENDENCIES[name] for name in import_names if name != "torch"]


class ICHAnalyzerLogic:
    """Runs ICHAnalyzer on volume nodes and keeps its results in the scene (no qt needed)."""

    def __init__(self, scene: object | None = None) -> None:
        self.scene = scene if scene is not None else slicer.mrmlScene
        self._brain_cache: dict[str, tuple[tuple, np.ndarray]] = {}
        mrml.ensure_segmentation_converters()

    # ------------------------------------------------------------------ finding results

    def find_result(self, volume_node: object) -> object | None:
        """The ICHAnalyzer segmentation made for ``volume_node`` (latest), or None."""
        found = None
        nodes = self.scene.GetNodesByClass("vtkMRMLSegmentationNode")
        for index in range(nodes.GetNumberOfItems()):
            node = nodes.GetItemAsObject(index)
            if (
                node.GetAttribute(RESULT_ATTRIBUTE)
                and node.GetNodeReferenceID(INPUT_ROLE) == volume_node.GetID()
            ):
                found = node
        return found

    def result_nodes(self, segmentation_node: object) -> ResultNodes:
        """The tables, chart and lines that belong to an ICHAnalyzer segmentation."""
        lines = {}
        for index in range(segmentation_node.GetNumberOfNodeReferences(LINE_ROLE)):
            line = segmentation_node.GetNthNodeReference(LINE_ROLE, index)
            if line is not None:
                lines[line.GetName()] = line
        return ResultNodes(
            segmentation=segmentation_node,
            detection_table=segmentation_node.GetNodeReference(DETECTION_TABLE_ROLE),
            volumes_table=segmentation_node.GetNodeReference(VOLUMES_TABLE_ROLE),
            slice_table=segmentation_node.GetNodeReference(SLICE_TABLE_ROLE),
            chart=segmentation_node.GetNodeReference(CHART_ROLE),
            lines=lines,
        )

    def model_report(self, segmentation_node: object) -> dict:
        """The report of the last analysis (model or given labels), before any edit."""
        return json.loads(segmentation_node.GetAttribute(MODEL_REPORT_ATTRIBUTE))

    def current_report(self, segmentation_node: object) -> dict:
        """The report as last recomputed (equal to the model report until a recompute)."""
        text = segmentation_node.GetAttribute(REPORT_ATTRIBUTE) or segmentation_node.GetAttribute(
            MODEL_REPORT_ATTRIBUTE
        )
        return json.loads(text)

    def current_labels(self, volume_node: object, segmentation_node: object) -> tuple[np.ndarray, list[str]]:
        """The segmentation's label map on the volume node's grid (node order), and ignored segment names."""
        return mrml.segmentation_to_labels(segmentation_node, volume_node)

    def is_edited(self, volume_node: object, segmentation_node: object | None = None) -> bool:
        """True when the segmentation differs from the last model output (the user edited it)."""
        segmentation_node = segmentation_node or self.find_result(volume_node)
        if segmentation_node is None:
            return False
        labels, ignored = self.current_labels(volume_node, segmentation_node)
        return bool(ignored) or mrml.label_digest(labels) != segmentation_node.GetAttribute(
            MODEL_DIGEST_ATTRIBUTE
        )

    # ------------------------------------------------------------------ analysis

    def check_can_replace(self, volume_node: object, replace_edits: bool) -> None:
        """Raise ``EditsWouldBeLostError`` unless the existing result is unedited or ``replace_edits``."""
        if not replace_edits and self.is_edited(volume_node):
            raise EditsWouldBeLostError(
                f"The segmentation of '{volume_node.GetName()}' was edited: analysing again would "
                "replace it. "
                "Export or rename it first, or confirm the replacement."
            )

    def analyze(
        self,
        volume_node: object,
        labels: np.ndarray | None = None,
        device: str = "auto",
        progress: Callable[[str, float], None] | None = None,
        replace_edits: bool = False,
        gcs: int | None = None,
        age: int | None = None,
    ) -> ResultNodes:
        """Analyse in this process (tests, scripting); ``labels`` (node order) skip the model (--mask);
        ``gcs`` and ``age`` (None: unknown) complete the ICH score."""
        from ICHAnalyzerLib.pipeline import analyze_volume

        self.check_can_replace(volume_node, replace_edits)
        ct, grid = mrml.volume_node_to_ct(volume_node)
        core_labels = None if labels is None else grid.to_core(np.asarray(labels))
        result = analyze_volume(ct, labels=core_labels, device=device, progress=progress, gcs=gcs, age=age)
        return self.show_result(volume_node, ct, grid, result.labels, result.report)

    def start_background(
        self,
        volume_node: object,
        device: str = "auto",
        mask_path: str | None = None,
        python: str | None = None,
        replace_edits: bool = False,
        gcs: int | None = None,
        age: int | None = None,
    ) -> BackgroundJob:
        """Save the volume to a temporary NRRD and start the core's ``analyze`` in another process.

        Poll the returned job (e.g. from a qt.QTimer), then call :meth:`finish_background`; ``job.cancel()``
        stops it and leaves the scene untouched.
        """
        from ICHAnalyzerLib.measures import check_gcs_age

        check_gcs_age(gcs, age)  # a one-line InputError here rather than from the worker
        self.check_can_replace(volume_node, replace_edits)
        ct, grid = mrml.volume_node_to_ct(volume_node)
        workdir = Path(tempfile.mkdtemp(prefix="ICHAnalyzer-"))
        input_path = workdir / "input.nrrd"
        mrml.write_temporary_nrrd(input_path, ct)
        command = worker_command(
            python or python_executable(), input_path, workdir / "output", device, mask_path, gcs, age
        )
        job = BackgroundJob(command, workdir=workdir, env=worker_environment())
        job.context = {"volume_id": volume_node.GetID(), "ct": ct, "grid": grid}
        job.start()
        return job

    def finish_background(self, job: BackgroundJob) -> ResultNodes:
        """Load a finished background job's output into the scene, then remove its temporary folder."""
        try:
            if job.returncode != 0:
                raise ICHAnalyzerError(job.error_message())
            volume_node = self.scene.GetNodeByID(job.context["volume_id"])
            if volume_node is None:
                raise InputError("The input volume was removed from the scene while it was being analysed.")
            return self.load_output_folder(
                volume_node, job.workdir / "output", job.context["ct"], job.context["grid"]
            )
        finally:
            job.cleanup()

    def load_output_folder(
        self, volume_node: object, outdir: Path, ct: CTVolume | None = None, grid: mrml.NodeGrid | None = None
    ) -> ResultNodes:
        """Show an output folder written by ``ichanalyzer analyze`` on this volume (report.json, labelmap)."""
        from ICHAnalyzerLib.io import load_labelmap

        if ct is None or grid is None:
            ct, grid = mrml.volume_node_to_ct(volume_node)
        outdir = Path(outdir)
        report = json.loads((outdir / "report.json").read_text())
        labels = load_labelmap(outdir / "labelmap.nii.gz", ct)  # refuses a label map off this grid
        return self.show_result(volume_node, ct, grid, labels, report)

    # ------------------------------------------------------------------ showing results

    def _table(self, segmentation_node: object, role: str, name: str) -> object:
        node = segmentation_node.GetNodeReference(role)
        if node is None:
            node = self.scene.AddNewNodeByClass("vtkMRMLTableNode", name)
            node.SetAttribute(RESULT_ATTRIBUTE, "1")
            segmentation_node.SetNodeReferenceID(role, node.GetID())
        return node

    def show_result(
        self, volume_node: object, ct: CTVolume, grid: mrml.NodeGrid, labels: np.ndarray, report: dict
    ) -> ResultNodes:
        """Create or refresh the segmentation, tables, plot and lines for one analysis of ``volume_node``.

        ``labels`` are on ``ct``'s (core) grid. The previous result of this volume is replaced.
        """
        if tuple(labels.shape) != ct.shape:
            raise InputError(f"Label map shape {tuple(labels.shape)} differs from the CT grid {ct.shape}.")
        before = {self.scene.GetNthNode(n).GetID() for n in range(self.scene.GetNumberOfNodes())}
        try:
            return self._show_result(volume_node, grid, labels, report)
        except Exception:
            # nothing half-loaded: remove what this call added
            for n in reversed(range(self.scene.GetNumberOfNodes())):
                node = self.scene.GetNthNode(n)
                if node is not None and node.GetID() not in before:
                    self.scene.RemoveNode(node)
            raise

    def _show_result(
        self, volume_node: object, grid: mrml.NodeGrid, labels: np.ndarray, report: dict
    ) -> ResultNodes:
        segmentation_node = self.find_result(volume_node)
        base = volume_node.GetName()
        if segmentation_node is None:
            segmentation_node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{base} ICH")
            segmentation_node.CreateDefaultDisplayNodes()
            segmentation_node.SetAttribute(RESULT_ATTRIBUTE, "1")
            segmentation_node.SetNodeReferenceID(INPUT_ROLE, volume_node.GetID())
        node_labels = grid.to_node(np.asarray(labels, dtype=np.uint8))
        mrml.labels_to_segmentation(node_labels, volume_node, segmentation_node)
        segmentation_node.SetAttribute(MODEL_DIGEST_ATTRIBUTE, mrml.label_digest(node_labels))
        for subtype in SUBTYPES:
            segmentation_node.SetAttribute(
                f"{MODEL_DIGEST_ATTRIBUTE}.{subtype.key}", mrml.label_digest(node_labels == subtype.label)
            )
        segmentation_node.SetAttribute(MODEL_REPORT_ATTRIBUTE, json.dumps(report))
        segmentation_node.RemoveAttribute(REPORT_ATTRIBUTE)

        detection = self._table(segmentation_node, DETECTION_TABLE_ROLE, f"{base} ICH detection")
        mrml.fill_detection_table(detection, report)
        volumes = self._table(segmentation_node, VOLUMES_TABLE_ROLE, f"{base} ICH volumes")
        mrml.fill_volumes_table(volumes, report["volumes"], clinical=report.get("clinical"))
        slice_table = self._table(segmentation_node, SLICE_TABLE_ROLE, f"{base} ICH slices")
        keys = mrml.fill_slice_table(slice_table, report)
        chart = segmentation_node.GetNodeReference(CHART_ROLE)
        if chart is None:
            chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{base} ICH probability")
            chart.SetAttribute(RESULT_ATTRIBUTE, "1")
            segmentation_node.SetNodeReferenceID(CHART_ROLE, chart.GetID())
        mrml.fill_slice_plot(self.scene, chart, slice_table, keys)
        self.update_lines(segmentation_node, report["volumes"], report.get("clinical"))
        return self.result_nodes(segmentation_node)

    def update_lines(
        self, segmentation_node: object, volumes: dict, clinical: dict | None = None
    ) -> dict[str, object]:
        """Make the ABC/2 (A, B), thickness and midline-shift lines match ``volumes`` and ``clinical``:
        move, add, remove stale ones."""
        existing = self.result_nodes(segmentation_node).lines
        wanted = mrml.measurement_line_specs(volumes, clinical)
        segmentation_node.RemoveNodeReferenceIDs(LINE_ROLE)
        lines = {}
        for name, key, endpoints in wanted:
            line = mrml.update_line_node(self.scene, existing.pop(name, None), name, key, endpoints)
            segmentation_node.AddNodeReferenceID(LINE_ROLE, line.GetID())
            lines[name] = line
        for stale in existing.values():
            self.scene.RemoveNode(stale)
        return lines

    # ------------------------------------------------------------------ edits

    def recompute(
        self, volume_node: object, patient: tuple[int | None, int | None] | None = None
    ) -> dict:
        """Volumes, ABC/2 and lines from the current segments, without running the model again.

        Returns the updated report: ``source_of_labels`` is "edited" when the segments differ from the
        model's, ``edits`` lists the subtypes changed and the model's volumes, and the label-derived
        ``clinical`` section (location, ICH score, midline shift) is recomputed too. ``patient`` =
        (GCS, age), None items unknown, replaces those of the analysis; None keeps them.
        """
        from ICHAnalyzerLib import pipeline
        from ICHAnalyzerLib.measures import check_gcs_age, ich_score
        from ICHAnalyzerLib.pipeline import measure
        from ICHAnalyzerLib.report import validate_report

        segmentation_node = self.find_result(volume_node)
        if segmentation_node is None:
            raise InputError(
                f"'{volume_node.GetName()}' has no ICHAnalyzer result to recompute: analyse it first."
            )
        if patient is not None:
            check_gcs_age(*patient)
        ct, grid = mrml.volume_node_to_ct(volume_node)
        node_labels, ignored = self.current_labels(volume_node, segmentation_node)
        core_labels = grid.to_core(node_labels)
        volumes = measure(ct, core_labels)
        model_report = self.model_report(segmentation_node)
        report = copy.deepcopy(model_report)
        report["volumes"] = volumes
        model_volumes = model_report["volumes"]
        changed = [
            s.key
            for s in SUBTYPES
            if mrml.label_digest(node_labels == s.label)
            != segmentation_node.GetAttribute(f"{MODEL_DIGEST_ATTRIBUTE}.{s.key}")
        ]
        edited = mrml.label_digest(node_labels) != segmentation_node.GetAttribute(MODEL_DIGEST_ATTRIBUTE)
        if edited:
            report["source_of_labels"] = "edited"
            report["edits"] = {
                "edited_by": "user (3D Slicer Segment Editor)",
                "labels_before_edit": model_report["source_of_labels"],
                "subtypes_changed": changed,
                "model_volumes_ml": {k: model_volumes[k]["volume_ml"] for k in (*SUBTYPE_KEYS, "total")},
                "ignored_segments": ignored,
            }
        score = (model_report.get("clinical") or {}).get("ich_score") or {}
        gcs, age = patient if patient is not None else (score.get("gcs"), score.get("age"))
        if edited and hasattr(pipeline, "clinical"):
            report["clinical"] = pipeline.clinical(
                ct, core_labels, self.brain_mask(volume_node, ct), volumes, "edited", gcs=gcs, age=age
            )
        elif report.get("clinical") and patient is not None:
            # labels unchanged: only the score's GCS and age parts change (imaging parts kept)
            report["clinical"]["ich_score"] = ich_score(
                volumes, score.get("infratentorial_origin"), gcs=gcs, age=age
            )
        validate_report(report)
        segmentation_node.SetAttribute(REPORT_ATTRIBUTE, json.dumps(report))
        nodes = self.result_nodes(segmentation_node)
        mrml.fill_volumes_table(nodes.volumes_table, volumes, model_volumes, clinical=report.get("clinical"))
        self.update_lines(segmentation_node, volumes, report.get("clinical"))
        return report

    def _up_to_date_report(self, volume_node: object, segmentation_node: object) -> dict:
        """The report of the current segments: recomputed first when they were edited."""
        if self.is_edited(volume_node, segmentation_node):
            return self.recompute(volume_node)
        return self.current_report(segmentation_node)

    # ------------------------------------------------------------------ follow-up

    def analysis_result(self, volume_node: object) -> object:
        """The volume's current result as a core ``pipeline.AnalysisResult`` (current, possibly edited,
        segments and report; recomputed first when edited)."""
        from ICHAnalyzerLib.pipeline import AnalysisResult

        segmentation_node = self.find_result(volume_node)
        if segmentation_node is None:
            raise InputError(f"'{volume_node.GetName()}' has no ICHAnalyzer result: analyse it first.")
        report = self._up_to_date_report(volume_node, segmentation_node)
        if report["source_of_labels"] == "none":
            raise InputError(
                f"'{volume_node.GetName()}' has no hemorrhage labels ({report['detection'].get('reason')}): "
                "an empty result cannot be compared."
            )
        ct, grid = mrml.volume_node_to_ct(volume_node)
        labels = grid.to_core(self.current_labels(volume_node, segmentation_node)[0])
        return AnalysisResult(ct=ct, labels=labels, brain=self.brain_mask(volume_node, ct), report=report)

    def compare_followup(self, baseline_node: object, followup_node: object) -> tuple[dict, object]:
        """Compare the analysed follow-up CT with the analysed baseline (the core's ``compare_results``:
        rigid registration, volume changes, expansion flags). Returns the comparison and its change table
        node (kept with the baseline's result; the comparison JSON is its ``ICHAnalyzer.Comparison``
        attribute)."""
        from ICHAnalyzerLib.compare import compare_results

        if followup_node is None or baseline_node is None:
            raise InputError("Select both the baseline and the follow-up CT.")
        if followup_node.GetID() == baseline_node.GetID():
            raise InputError("The follow-up CT is the baseline CT itself: select another volume.")
        baseline = self.analysis_result(baseline_node)
        comparison, _ = compare_results(baseline, self.analysis_result(followup_node))
        segmentation_node = self.find_result(baseline_node)
        table = self._table(
            segmentation_node, COMPARISON_TABLE_ROLE, f"{baseline_node.GetName()} ICH follow-up change"
        )
        mrml.fill_comparison_table(table, comparison)
        table.SetAttribute(COMPARISON_ATTRIBUTE, json.dumps(comparison))
        table.SetAttribute("ICHAnalyzer.FollowupVolumeID", followup_node.GetID())
        return comparison, table

    def comparison_table(self, baseline_node: object) -> object | None:
        """The change table of the last follow-up comparison of this baseline, or None."""
        segmentation_node = self.find_result(baseline_node)
        return segmentation_node.GetNodeReference(COMPARISON_TABLE_ROLE) if segmentation_node else None

    def brain_mask(self, volume_node: object, ct: CTVolume) -> np.ndarray:
        """The core's brain mask of the volume, cached until its voxels or geometry change."""
        from ICHAnalyzerLib.brainmask import brain_mask

        key = (volume_node.GetID(), volume_node.GetImageData().GetMTime(), ct.affine.tobytes())
        cached = self._brain_cache.get(volume_node.GetID())
        if cached is None or cached[0] != key:
            cached = (key, brain_mask(ct))
            self._brain_cache[volume_node.GetID()] = cached
        return cached[1]

    # ------------------------------------------------------------------ navigation

    def positive_slices(self, volume_node: object) -> list[int]:
        """Grid slices (core k) that hold any segment voxel, else those with P(any) >= 0.5."""
        segmentation_node = self.find_result(volume_node)
        if segmentation_node is None:
            return []
        ct, grid = mrml.volume_node_to_ct(volume_node)
        labels = grid.to_core(self.current_labels(volume_node, segmentation_node)[0])
        ks = [int(k) for k in np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))]
        if ks:
            return ks
        report = self.current_report(segmentation_node)
        return sorted(
            {
                int(round(s["grid_k"]))
                for s in report["slices"]
                if (s["probabilities"].get("any") or 0.0) >= 0.5
            }
        )

    def next_positive_slice(self, volume_node: object, current_k: int) -> int | None:
        """The next positive slice after ``current_k`` (wrapping around), or None when there is none."""
        ks = self.positive_slices(volume_node)
        if not ks:
            return None
        later = [k for k in ks if k > current_k]
        return later[0] if later else ks[0]

    def plot_row_slice(self, volume_node: object, row: int) -> int:
        """Grid slice of row ``row`` of the per-slice table/plot (rows follow the report's input slices)."""
        segmentation_node = self.find_result(volume_node)
        if segmentation_node is None:
            raise InputError(f"'{volume_node.GetName()}' has no ICHAnalyzer result.")
        return int(round(self.current_report(segmentation_node)["slices"][row]["grid_k"]))

    def slice_count(self, volume_node: object) -> int:
        """Number of axial (core grid) slices of the volume."""
        dims = volume_node.GetImageData().GetDimensions()
        return int(dims[mrml.axial_grid(mrml.ras_to_lps(mrml.ijk_to_world_ras(volume_node))).perm[2]])

    def slice_position_ras(self, volume_node: object, k: int) -> np.ndarray:
        """World RAS centre of core grid slice ``k`` of the volume (to jump slice views there)."""
        ct, _ = mrml.volume_node_to_ct(volume_node)
        return mrml.slice_center_ras(ct, k)

    def slice_index_at(self, volume_node: object, ras: np.ndarray) -> int:
        """Core grid slice nearest to a world RAS point."""
        ct, _ = mrml.volume_node_to_ct(volume_node)
        ijk = ct.lps_to_voxel(mrml.lps_points_to_ras(np.asarray(ras, dtype=float)))[0]
        return int(np.clip(round(ijk[2]), 0, ct.shape[0] - 1))

    def jump_to_slice(self, volume_node: object, k: int) -> np.ndarray:
        """Centre all slice views on slice ``k``; returns the RAS point used."""
        ras = self.slice_position_ras(volume_node, k)
        slicer.vtkMRMLSliceNode.JumpAllSlices(
            self.scene, *[float(x) for x in ras], slicer.vtkMRMLSliceNode.CenteredJumpSlice
        )
        return ras

    # ------------------------------------------------------------------ export

    def export(
        self, volume_node: object, folder: str | Path, screenshot: Callable[[Path], None] | None = None
    ) -> list[Path]:
        """Write report.json, report.csv (core writers; current, possibly edited report),
        segmentation.seg.nrrd and, given a ``screenshot(path)`` callable, screenshot.png into ``folder``."""
        from ICHAnalyzerLib.report import validate_report, write_report

        segmentation_node = self.find_result(volume_node)
        if segmentation_node is None:
            raise InputError(f"'{volume_node.GetName()}' has no ICHAnalyzer result to export.")
        report = self._up_to_date_report(volume_node, segmentation_node)
        validate_report(report)
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_report(report, folder)
        except OSError as exc:
            raise OutputError(f"Cannot write into {folder}: {exc}") from None
        seg_path = folder / "segmentation.seg.nrrd"
        storage = segmentation_node.CreateDefaultStorageNode()
        storage.SetFileName(str(seg_path))
        if not storage.WriteData(segmentation_node):
            raise OutputError(f"Cannot write {seg_path}")
        written = [folder / "report.json", folder / "report.csv", seg_path]
        if screenshot is not None:
            shot = folder / "screenshot.png"
            screenshot(shot)
            if shot.exists():
                written.append(shot)
        return written


def python_executable() -> str:
    """Slicer's command-line Python (PythonSlicer) when there is one, else this interpreter."""
    found = shutil.which("PythonSlicer")
    if found:
        return found
    candidate = Path(sys.executable).with_name("PythonSlicer" + (".exe" if os.name == "nt" else ""))
    return str(candidate) if candidate.exists() else sys.executable


def worker_environment() -> dict[str, str]:
    """Environment for the background process: this one, with the module folder on PYTHONPATH."""
    env = dict(os.environ)
    module_dir = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (module_dir, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env
