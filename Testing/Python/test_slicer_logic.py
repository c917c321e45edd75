"""The Slicer module's logic on a real headless MRML scene (slicer-core): analyse through the logic, check
segments, tables and ABC/2 lines, edit a segment, recompute, export, protect edits, run in background."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (the MRML core) is not installed")

from ICHAnalyzerLib.constants import SUBTYPE_BY_KEY, SUBTYPE_BY_LABEL, SUBTYPE_KEYS  # noqa: E402
from ICHAnalyzerLib.errors import ICHAnalyzerError  # noqa: E402
from ICHAnalyzerLib.volume import CTVolume, lps_to_ras  # noqa: E402
from ICHAnalyzerSlicerLib import logic as slicerlogic  # noqa: E402
from ICHAnalyzerSlicerLib import mrml  # noqa: E402

pytestmark = pytest.mark.slicer


def synthetic_head(tilt_deg: float = 0.0) -> tuple[CTVolume, np.ndarray]:
    """A small head-like CT (skull, brain, an IPH blob and an SDH crescent) and its true labels."""
    nk, nj, ni = 20, 64, 60
    dx, dy, dz = 0.9, 0.9, 5.0
    affine = np.eye(4)
    affine[:3, 0] = [dx, 0, 0]
    affine[:3, 1] = [0, dy, 0]
    affine[:3, 2] = [0, dz * np.tan(np.radians(tilt_deg)), dz]
    affine[:3, 3] = [-27.0, -29.0, -40.0]
    k, j, i = np.meshgrid(np.arange(nk), np.arange(nj), np.arange(ni), indexing="ij")
    r = np.sqrt(((i - ni / 2) / 26) ** 2 + ((j - nj / 2) / 29) ** 2 + ((k - nk / 2) / 9.5) ** 2)
    hu = np.full((nk, nj, ni), -1000, np.int16)
    hu[r < 1.0] = 1000
    hu[r < 0.9] = 35
    labels = np.zeros((nk, nj, ni), np.uint8)
    iph = ((i - 22) / 7) ** 2 + ((j - 30) / 9) ** 2 + ((k - 10) / 3.2) ** 2 < 1
    labels[iph] = 1
    sdh = (r > 0.8) & (r < 0.9) & (i > 38) & (np.abs(k - 9) < 4) & (np.abs(j - 32) < 14)
    labels[sdh & ~iph] = 4
    hu[labels > 0] = 70
    return CTVolume(hu=hu, affine=affine, source="synthetic head"), labels


@pytest.fixture
def scene():
    previous = getattr(slicer, "mrmlScene", None)
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    yield scene
    scene.Clear(1)
    slicer.mrmlScene = previous


@pytest.fixture
def logic(scene):
    return slicerlogic.ICHAnalyzerLogic(scene)


def add_ct(scene, ct: CTVolume, name: str = "head"):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, ct.hu)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(lps_to_ras(ct.affine)))
    return node


def count_segmentations(scene) -> int:
    return scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems()


def check_result_matches(logic, volume, nodes, ct: CTVolume, labels: np.ndarray, report: dict) -> None:
    """Segments, tables and lines agree with the label map and the core's measurements."""
    from ICHAnalyzerLib.pipeline import measure

    segmentation = nodes.segmentation.GetSegmentation()
    present = [SUBTYPE_BY_LABEL[v].key for v in np.unique(labels) if v]
    assert [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())] == present
    back, ignored = logic.current_labels(volume, nodes.segmentation)
    assert ignored == [] and np.array_equal(back, labels)
    for key in present:
        assert segmentation.GetSegment(key).GetName() == SUBTYPE_BY_KEY[key].name
        assert int((back == SUBTYPE_BY_KEY[key].label).sum()) == report["volumes"][key]["voxel_count"]
    expected = measure(ct, labels)
    for key in (*SUBTYPE_KEYS, "total"):
        assert report["volumes"][key]["volume_ml"] == pytest.approx(expected[key]["volume_ml"])
        assert report["volumes"][key]["abc2_ml"] == expected[key]["abc2_ml"]

    rows = mrml.table_rows(nodes.volumes_table)
    assert [row["Subtype"] for row in rows] == [*present, "Total"]
    for row in rows:
        key = "total" if row["Subtype"] == "Total" else row["Subtype"]
        ml = report["volumes"][key]["volume_ml"]
        assert float(row["Voxel volume (mL)"]) == pytest.approx(ml, abs=0.005)
        diff = report["volumes"][key]["abc2_difference_pct"]
        assert ("differs" in row["Flag"]) == (diff is not None and abs(diff) > mrml.ABC2_DISAGREEMENT_PCT)

    for key in present:
        thickness = report["volumes"][key].get("thickness_endpoints")
        if SUBTYPE_BY_KEY[key].extra_axial and thickness:
            line = nodes.lines[f"{key} thickness"]
            points = slicer.util.arrayFromMarkupsControlPoints(line)
            assert np.allclose(points, mrml.lps_points_to_ras(thickness))
        abc2 = report["volumes"][key]["abc2"]
        if not abc2:
            assert f"{key} A" not in nodes.lines
            continue
        for axis in ("A", "B"):
            line = nodes.lines[f"{key} {axis}"]
            points = slicer.util.arrayFromMarkupsControlPoints(line)
            assert np.allclose(points, mrml.lps_points_to_ras(abc2[f"{axis}_endpoints"]))
            assert line.GetLineLengthWorld() == pytest.approx(abc2[f"{axis}_mm"], abs=0.05)


def test_analyze_with_labels_fills_the_scene(scene, logic):
    ct, labels = synthetic_head()
    volume = add_ct(scene, ct)
    nodes = logic.analyze(volume, labels=labels)
    report = logic.current_report(nodes.segmentation)
    assert report["source_of_labels"] == "mask"
    check_result_matches(logic, volume, nodes, ct, labels, report)
    detection = mrml.table_rows(nodes.detection_table)
    assert [r["Probability"] for r in detection[:6]] == [""] * 6  # no model ran: blank, never invented
    assert detection[6]["Finding"] == "Note" and detection[6]["Probability"]
    assert not logic.is_edited(volume)
    # the segmentation sits on the input's geometry
    reference = nodes.segmentation.GetNodeReference(
        slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole())
    assert reference.GetID() == volume.GetID()


def test_edit_then_recompute_matches_the_core_on_the_edited_labels(scene, logic):
    from ICHAnalyzerLib.pipeline import measure

    ct, labels = synthetic_head()
    volume = add_ct(scene, ct)
    nodes = logic.analyze(volume, labels=labels)
    before = logic.model_report(nodes.segmentation)

    edited = labels.copy()
    iph = edited == 1
    cut = int(np.flatnonzero(iph.any(axis=(1, 2))).mean())
    edited[cut:][edited[cut:] == 1] = 0  # erase the upper half of the IPH
    mrml.set_segment_mask(nodes.segmentation, volume, "IPH", edited == 1)
    assert logic.is_edited(volume)

    report = logic.recompute(volume)
    expected = measure(ct, edited)
    assert report["source_of_labels"] == "edited"
    assert report["edits"]["subtypes_changed"] == ["IPH"]
    assert report["edits"]["labels_before_edit"] == "mask"
    assert report["volumes"]["IPH"]["volume_ml"] == pytest.approx(expected["IPH"]["volume_ml"])
    assert report["volumes"]["IPH"]["voxel_count"] == int((edited == 1).sum())
    assert report["volumes"]["IPH"]["voxel_count"] < before["volumes"]["IPH"]["voxel_count"]
    assert report["volumes"]["IPH"]["abc2"] == expected["IPH"]["abc2"]
    assert report["volumes"]["SDH"] == before["volumes"]["SDH"]
    nodes = logic.result_nodes(nodes.segmentation)
    check_result_matches(logic, volume, nodes, ct, edited, report)
    # model and edited volumes side by side
    iph_row = next(r for r in mrml.table_rows(nodes.volumes_table) if r["Subtype"] == "IPH")
    model_ml = before["volumes"]["IPH"]["volume_ml"]
    assert float(iph_row["Model volume (mL)"]) == pytest.approx(model_ml, abs=0.005)
    assert float(iph_row["Voxel volume (mL)"]) == pytest.approx(expected["IPH"]["volume_ml"], abs=0.005)

    # erasing a whole subtype removes its lines
    mrml.set_segment_mask(nodes.segmentation, volume, "SDH", np.zeros_like(labels, dtype=bool))
    report = logic.recompute(volume)
    assert report["volumes"]["SDH"]["voxel_count"] == 0
    assert not any(name.startswith("SDH") for name in logic.result_nodes(nodes.segmentation).lines)


def test_export_writes_core_formats_and_the_edited_segmentation(scene, logic, tmp_path):
    import slicerio
    from ICHAnalyzerLib.report import CSV_COLUMNS, validate_report

    ct, labels = synthetic_head()
    volume = add_ct(scene, ct)
    nodes = logic.analyze(volume, labels=labels)
    edited = labels.copy()
    edited[:, :, :25][edited[:, :, :25] == 1] = 0
    mrml.set_segment_mask(nodes.segmentation, volume, "IPH", edited == 1)

    shots = []
    written = logic.export(volume, tmp_path / "out", screenshot=lambda p: shots.append(p))
    names = sorted(p.name for p in written)
    assert names == ["report.csv", "report.json", "segmentation.seg.nrrd"]
    assert shots == [tmp_path / "out" / "screenshot.png"]  # asked for, but this fake wrote nothing

    report = json.loads((tmp_path / "out" / "report.json").read_text())
    validate_report(report)
    assert report["source_of_labels"] == "edited"
    assert report["volumes"]["IPH"]["voxel_count"] == int((edited == 1).sum())
    with open(tmp_path / "out" / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    iph = next(r for r in rows if r["level"] == "scan" and r["subtype"] == "IPH")
    assert int(iph["voxel_count"]) == int((edited == 1).sum())

    seg = slicerio.read_segmentation(str(tmp_path / "out" / "segmentation.seg.nrrd"))
    assert np.allclose(seg["ijkToLPS"], ct.affine)
    voxels = np.asarray(seg["voxels"])
    back = np.zeros(ct.shape, np.uint8)
    for segment in seg["segments"]:
        key = segment["id"]
        layer = voxels[..., segment["layer"]] if voxels.ndim == 4 else voxels
        back[(layer == segment["labelValue"]).transpose(2, 1, 0)] = SUBTYPE_BY_KEY[key].label
        assert segment["name"] == SUBTYPE_BY_KEY[key].name
        assert segment["terminology"]["type"][1] == "50960005"  # SNOMED CT Hemorrhage
    assert np.array_equal(back, edited)


def test_analyze_again_after_edit_needs_confirmation(scene, logic):
    ct, labels = synthetic_head()
    volume = add_ct(scene, ct)
    nodes = logic.analyze(volume, labels=labels)
    logic.analyze(volume, labels=labels)  # unedited: replaced without asking
    assert count_segmentations(scene) == 1
    mrml.set_segment_mask(nodes.segmentation, volume, "SDH", np.zeros_like(labels, dtype=bool))
    with pytest.raises(slicerlogic.EditsWouldBeLostError):
        logic.analyze(volume, labels=labels)
    with pytest.raises(slicerlogic.EditsWouldBeLostError):
        logic.start_background(volume, python=sys.executable)
    assert logic.is_edited(volume)  # still the user's segmentation
    logic.analyze(volume, labels=labels, replace_edits=True)
    assert not logic.is_edited(volume) and count_segmentations(scene) == 1


def test_positive_slices_and_jump(scene, logic):
    ct, labels = synthetic_head()
    volume = add_ct(scene, ct)
    logic.analyze(volume, labels=labels)
    positive = [int(k) for k in np.flatnonzero(labels.any(axis=(1, 2)))]
    assert logic.positive_slices(volume) == positive
    assert [logic.plot_row_slice(volume, row) for row in range(ct.shape[0])] == list(range(ct.shape[0]))
    assert logic.next_positive_slice(volume, -1) == positive[0]
    assert logic.next_positive_slice(volume, positive[0]) == positive[1]
    assert logic.next_positive_slice(volume, positive[-1]) == positive[0]  # wraps around
    red = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    red.SetLayoutName("Red")
    red.SetOrientationToAxial()
    ras = logic.jump_to_slice(volume, positive[2])
    slice_to_ras = red.GetSliceToRAS()
    assert slice_to_ras.GetElement(2, 3) == pytest.approx(ras[2])
    assert logic.slice_index_at(volume, ras) == positive[2]


def test_background_run_loads_only_after_success(scene, logic, tmp_path):
    from ICHAnalyzerLib.io import write_labelmap_nifti

    ct, labels = synthetic_head()
    volume = add_ct(scene, ct)
    mask = tmp_path / "mask.nii.gz"
    write_labelmap_nifti(mask, labels, ct)
    job = logic.start_background(volume, mask_path=str(mask), python=sys.executable)
    assert count_segmentations(scene) == 0
    assert job.wait(timeout=300) == 0, job.output
    assert job.fraction == pytest.approx(1.0) and job.step == "done"
    nodes = logic.finish_background(job)
    assert not job.workdir.exists()
    report = logic.current_report(nodes.segmentation)
    assert report["source_of_labels"] == "mask"
    check_result_matches(logic, volume, nodes, ct, labels, report)


def test_background_cancel_and_failure_leave_the_scene_untouched(scene, logic, tmp_path):
    from ICHAnalyzerLib.io import write_labelmap_nifti

    ct, labels = synthetic_head()
    volume = add_ct(scene, ct)
    job = logic.start_background(volume, python=sys.executable)
    time.sleep(0.2)
    job.cancel()
    assert job.wait(timeout=30) is not None and job.cancelled
    with pytest.raises(ICHAnalyzerError, match="Cancelled"):
        logic.finish_background(job)
    assert count_segmentations(scene) == 0 and not job.workdir.exists()

    wrong = tmp_path / "wrong.nii.gz"
    small = CTVolume(hu=ct.hu[:5], affine=ct.affine)
    write_labelmap_nifti(wrong, labels[:5], small)
    job = logic.start_background(volume, mask_path=str(wrong), python=sys.executable)
    assert job.wait(timeout=300) != 0
    with pytest.raises(ICHAnalyzerError, match="shape"):
        logic.finish_background(job)
    assert count_segmentations(scene) == 0


def test_dependencies_are_all_importable_here():
    assert slicerlogic.missing_dependencies() == []
    assert slicerlogic.pip_requirements(["torch", "nrrd", "monai"]) == ["pynrrd", "monai"]


def test_tilted_grid_survives_the_round_trip(scene, logic):
    ct, labels = synthetic_head(tilt_deg=20.0)
    volume = add_ct(scene, ct)
    ct_back, grid = mrml.volume_node_to_ct(volume)
    assert np.allclose(ct_back.affine, ct.affine) and grid.perm == (0, 1, 2)
    assert ct_back.tilt_deg == pytest.approx(20.0)
    nodes = logic.analyze(volume, labels=labels)
    report = logic.current_report(nodes.segmentation)
    check_result_matches(logic, volume, nodes, ct, labels, report)
    voxel_ml = ct.voxel_volume_mm3 / 1000.0
    assert report["volumes"]["IPH"]["volume_ml"] == pytest.approx((labels == 1).sum() * voxel_ml, abs=1e-4)


def test_real_tilted_series_through_the_logic(scene, logic, shared_cache):
    from conftest import series_dir
    from ICHAnalyzerLib.io import load_ct

    ct = load_ct(series_dir(shared_cache, "ID_73637515"))  # 24 degree gantry tilt
    volume = add_ct(scene, ct, "real")
    ct_back, _ = mrml.volume_node_to_ct(volume)
    assert np.allclose(ct_back.affine, ct.affine) and np.array_equal(ct_back.hu, ct.hu)
    # a sphere of "blood" near the centre of the head, as --mask labels
    k, j, i = np.indices(ct.shape)
    centre = np.array(ct.shape) // 2
    labels = np.zeros(ct.shape, np.uint8)
    dist2 = ((k - centre[0]) * 5.0) ** 2 + ((j - centre[1]) * 0.5) ** 2 + ((i - centre[2]) * 0.5) ** 2
    labels[dist2 < 15**2] = 1
    nodes = logic.analyze(volume, labels=labels)
    report = logic.current_report(nodes.segmentation)
    check_result_matches(logic, volume, nodes, ct, labels, report)
    assert report["input"]["tilt_deg"] == pytest.approx(ct.tilt_deg, abs=1e-3)


@pytest.mark.parametrize("tilt_deg", [0.0, 15.0])
def test_phantom_analyse_edit_recompute_export(scene, logic, tmp_path, tilt_deg):
    import slicerio
    from ICHAnalyzerLib.phantom import make_phantom
    from ICHAnalyzerLib.pipeline import measure

    phantom = make_phantom(tilt_deg=tilt_deg)
    volume = add_ct(scene, phantom.ct, "phantom")
    nodes = logic.analyze(volume, labels=phantom.labels)
    report = logic.current_report(nodes.segmentation)
    check_result_matches(logic, volume, nodes, phantom.ct, phantom.labels, report)
    segmentation = nodes.segmentation.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 5  # the phantom holds all five subtypes
    for key in SUBTYPE_KEYS:
        terminology = mrml.segment_terminology(segmentation.GetSegment(key))
        assert SUBTYPE_BY_KEY[key].region_code[1] in terminology
    assert {"SDH thickness", "EDH thickness"} <= set(nodes.lines)

    # erase the SDH on every other slice (as a user would with the eraser), recompute
    edited = phantom.labels.copy()
    edited[::2][edited[::2] == 4] = 0
    mrml.set_segment_mask(nodes.segmentation, volume, "SDH", edited == 4)
    report = logic.recompute(volume)
    expected = measure(phantom.ct, edited)
    assert report["edits"]["subtypes_changed"] == ["SDH"]
    for key in (*SUBTYPE_KEYS, "total"):
        assert report["volumes"][key]["volume_ml"] == pytest.approx(expected[key]["volume_ml"])
        assert report["volumes"][key]["abc2_ml"] == expected[key]["abc2_ml"]
        assert report["volumes"][key]["max_thickness_mm"] == expected[key]["max_thickness_mm"]
    check_result_matches(logic, volume, logic.result_nodes(nodes.segmentation), phantom.ct, edited, report)
    if "clinical" in report:  # label-derived clinical measures follow the edit too
        assert report["clinical"]["ich_score"]["ivh"] is True
        # erase the whole IVH: the ICH score's IVH item must drop
        edited[edited == 2] = 0
        mrml.set_segment_mask(nodes.segmentation, volume, "IVH", edited == 2)
        report = logic.recompute(volume)
        assert report["edits"]["subtypes_changed"] == ["IVH", "SDH"]
        assert report["volumes"]["IVH"]["voxel_count"] == 0
        assert report["clinical"]["ich_score"]["ivh"] is False
        assert logic.model_report(nodes.segmentation)["clinical"]["ich_score"]["ivh"] is True

    logic.export(volume, tmp_path)
    seg = slicerio.read_segmentation(str(tmp_path / "segmentation.seg.nrrd"))
    sdh = next(s for s in seg["segments"] if s["id"] == "SDH")
    voxels = np.asarray(seg["voxels"])
    layer = voxels[..., sdh["layer"]] if voxels.ndim == 4 else voxels
    assert int((layer == sdh["labelValue"]).sum()) == int((edited == 4).sum())
    assert np.allclose(seg["ijkToLPS"], phantom.ct.affine)
    assert json.loads((tmp_path / "report.json").read_text())["source_of_labels"] == "edited"


def test_the_slicer_self_test_scenario_runs_headless(scene, logic):
    from ICHAnalyzerSlicerLib.selftest import run_self_test

    messages = []
    report = run_self_test(logic, log=messages.append)
    assert messages[-1] == "Self-test passed"
    assert report["source_of_labels"] == "edited" and report["edits"]["subtypes_changed"]


def test_volume_under_a_linear_transform(scene, logic):
    """Segments stay under the volume's transform on its grid; lines and report are in world space."""
    ct, labels = synthetic_head()
    volume = add_ct(scene, ct)
    angle = np.radians(10.0)
    to_parent = np.eye(4)
    to_parent[:3, :3] = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    to_parent[:3, 3] = [12.0, -7.0, 3.0]
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(to_parent))
    volume.SetAndObserveTransformNodeID(transform.GetID())

    nodes = logic.analyze(volume, labels=labels)
    assert nodes.segmentation.GetTransformNodeID() == transform.GetID()
    world_ct, _ = mrml.volume_node_to_ct(volume)
    assert np.allclose(lps_to_ras(world_ct.affine), to_parent @ lps_to_ras(ct.affine))
    report = logic.current_report(nodes.segmentation)
    check_result_matches(logic, volume, nodes, world_ct, labels, report)
    # the A line of the IPH lies on the IPH in world space: its midpoint is inside the transformed blob
    mid = slicer.util.arrayFromMarkupsControlPoints(nodes.lines["IPH A"]).mean(axis=0)
    ijk = world_ct.lps_to_voxel(mrml.lps_points_to_ras(mid))[0]
    i, j, k = (int(round(v)) for v in ijk)
    assert labels[k, j, i] == 1


def test_a_result_that_cannot_be_shown_leaves_nothing_behind(scene, logic):
    ct, labels = synthetic_head()
    volume = add_ct(scene, ct)
    ct_node, grid = mrml.volume_node_to_ct(volume)
    count = scene.GetNumberOfNodes()
    broken_report = {"detection": {}, "slices": []}  # no "volumes": fails after the segments were made
    with pytest.raises(KeyError):
        logic.show_result(volume, ct_node, grid, labels, broken_report)
    assert scene.GetNumberOfNodes() == count and count_segmentations(scene) == 0


def test_analyze_without_labels_runs_the_installed_model_or_says_why_not(scene, logic):
    ct, _ = synthetic_head()
    volume = add_ct(scene, ct)
    nodes = logic.analyze(volume)
    report = logic.current_report(nodes.segmentation)
    labels, _ = logic.current_labels(volume, nodes.segmentation)
    if report["model"] is None:  # no model in this build: empty result, blank probabilities, a reason
        assert report["source_of_labels"] == "none"
        assert nodes.segmentation.GetSegmentation().GetNumberOfSegments() == 0 and not labels.any()
        assert report["detection"]["reason"]
        assert mrml.table_rows(nodes.detection_table)[-1]["Finding"] == "Note"
        assert nodes.lines == {} and nodes.chart.GetNumberOfPlotSeriesNodes() == 0
    else:
        assert report["source_of_labels"] == "model"
        check_result_matches(logic, volume, nodes, ct, labels, report)
        assert nodes.chart.GetNumberOfPlotSeriesNodes() == 6


def child_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie left for an init that does not reap counts as ended)."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(sys.platform == "win32", reason="process groups are POSIX")
def test_cancel_stops_the_worker_and_its_children(tmp_path):
    from ICHAnalyzerSlicerLib.process import BackgroundJob

    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('CHILD', child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    job = BackgroundJob([sys.executable, "-c", script], workdir=tmp_path)
    job.start()
    deadline = time.monotonic() + 30
    while not any(line.startswith("CHILD") for line in job.output) and time.monotonic() < deadline:
        job.poll()
        time.sleep(0.05)
    child_pid = int(next(line for line in job.output if line.startswith("CHILD")).split()[1])
    job.cancel()
    assert job.wait(timeout=10) is not None and job.cancelled
    for _ in range(50):  # the child was in the worker's process group
        if not child_alive(child_pid):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the worker's child process survived Cancel")
    assert job.error_message() == "Cancelled."
