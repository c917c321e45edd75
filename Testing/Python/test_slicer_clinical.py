"""Clinical measures in the Slicer module on a real headless MRML scene (slicer-core): the midline-shift line,
the location column, GCS/age for the ICH score, and the follow-up comparison (expansion)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (the MRML core) is not installed")

from conftest import SHARED  # noqa: E402
from ICHAnalyzerLib.constants import SUBTYPE_BY_KEY, SUBTYPE_KEYS  # noqa: E402
from ICHAnalyzerLib.volume import CTVolume, lps_to_ras  # noqa: E402
from ICHAnalyzerSlicerLib import logic as slicerlogic  # noqa: E402
from ICHAnalyzerSlicerLib import mrml  # noqa: E402
from ICHAnalyzerSlicerLib.process import worker_command  # noqa: E402

pytestmark = pytest.mark.slicer
TEMPLATES = SHARED / "data" / "templates"


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


@pytest.fixture(scope="module")
def phantom():
    from ICHAnalyzerLib.phantom import make_phantom

    return make_phantom()


@pytest.fixture
def with_templates(monkeypatch):
    """The template/atlas folder from ../shared (hematoma location available)."""
    from ICHAnalyzerLib import atlas

    monkeypatch.setenv("ICH_TEMPLATES", str(TEMPLATES))
    if atlas.find_templates() is None:
        pytest.skip("../shared/data/templates is absent: location needs the template and atlas")


@pytest.fixture
def without_templates(monkeypatch):
    from ICHAnalyzerLib import atlas

    monkeypatch.setattr(atlas, "find_templates", lambda: None)


def add_ct(scene, ct: CTVolume, name: str):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, ct.hu)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(lps_to_ras(ct.affine)))
    return node


def check_midline_line(nodes, report: dict) -> None:
    shift = report["clinical"]["midline_shift"]
    line = nodes.lines.get(mrml.MIDLINE_LINE_NAME)
    if shift["line_endpoints"] is None:
        assert line is None
        return
    points = slicer.util.arrayFromMarkupsControlPoints(line)
    assert np.allclose(points, mrml.lps_points_to_ras(shift["line_endpoints"]))
    assert np.allclose(points[:, :2], -np.asarray(shift["line_endpoints"])[:, :2])  # LPS -> RAS flips x, y
    assert line.GetLineLengthWorld() == pytest.approx(shift["shift_mm"], abs=0.05)


def test_midline_line_location_column_and_summary(scene, logic, phantom, with_templates):
    volume = add_ct(scene, phantom.ct, "phantom")
    nodes = logic.analyze(volume, labels=phantom.labels, gcs=15, age=40)
    report = logic.current_report(nodes.segmentation)
    clinical = report["clinical"]
    assert clinical["midline_shift"]["line_endpoints"] is not None  # the phantom's septum is off midline
    check_midline_line(nodes, report)

    rows = mrml.table_rows(nodes.volumes_table)
    assert "Location" in rows[0]
    located = {(e["subtype"], e["id"]): e for e in clinical["location"]["hematomas"]}
    for row in rows[:-1]:
        key = row["Subtype"]
        largest = max(report["volumes"][key]["hematomas"], key=lambda h: h["voxel_count"])
        entry = located[(key, largest["id"])]
        assert row["Location"] == ", ".join(p for p in (entry["region"], entry["side"]) if p)
    assert rows[-1]["Subtype"] == "Total" and rows[-1]["Location"] == ""

    score = clinical["ich_score"]
    assert score["gcs"] == 15 and score["age"] == 40 and score["score"] is not None
    summary = mrml.clinical_summary(report)
    assert f"Midline shift: {clinical['midline_shift']['shift_mm']:.1f} mm" in summary
    assert f"ICH score: {score['score']}" in summary

    # GCS and age changed on Recompute (labels unchanged): the score follows, imaging parts kept
    report = logic.recompute(volume, patient=(8, 85))
    score2 = report["clinical"]["ich_score"]
    assert (score2["gcs"], score2["age"], score2["gcs_points"], score2["age_ge_80"]) == (8, 85, 1, True)
    assert score2["score"] == score["score"] + 1 + 1  # GCS 15 -> 8: +1 point; age 40 -> 85: +1 point
    assert report["clinical"]["midline_shift"] == clinical["midline_shift"]
    report = logic.recompute(volume, patient=(None, 85))
    assert report["clinical"]["ich_score"]["score"] is None
    assert "GCS" in report["clinical"]["ich_score"]["missing"]
    assert "missing GCS" in mrml.clinical_summary(report)


def test_location_column_says_why_without_templates(scene, logic, phantom, without_templates):
    volume = add_ct(scene, phantom.ct, "phantom")
    nodes = logic.analyze(volume, labels=phantom.labels)
    report = logic.current_report(nodes.segmentation)
    assert report["clinical"]["location"] is None
    reason = report["clinical"]["location_reason"]
    rows = mrml.table_rows(nodes.volumes_table)
    assert [r["Subtype"] for r in rows] == [*SUBTYPE_KEYS, "Total"]
    assert all(r["Location"] == f"- ({reason})" for r in rows[:-1])
    assert report["clinical"]["ich_score"]["missing"] == ["GCS", "age", "infratentorial origin"]
    check_midline_line(nodes, report)
    shift = report["clinical"]["midline_shift"]
    if shift["shift_mm"] is not None and not shift["reliable"]:
        assert f"not reliable: {shift['note']}" in mrml.clinical_summary(report)


def test_midline_line_follows_recompute_after_edits(scene, logic, phantom, without_templates):
    volume = add_ct(scene, phantom.ct, "phantom")
    nodes = logic.analyze(volume, labels=phantom.labels)
    before = logic.current_report(nodes.segmentation)
    check_midline_line(nodes, before)
    line_id = nodes.lines[mrml.MIDLINE_LINE_NAME].GetID()

    edited = phantom.labels.copy()
    edited[edited == SUBTYPE_BY_KEY["IVH"].label] = 0  # erase the IVH
    mrml.set_segment_mask(nodes.segmentation, volume, "IVH", edited == SUBTYPE_BY_KEY["IVH"].label)
    report = logic.recompute(volume)
    assert report["source_of_labels"] == "edited" and report["clinical"]["ich_score"]["ivh"] is False
    nodes = logic.result_nodes(nodes.segmentation)
    check_midline_line(nodes, report)  # consistent with the recomputed report
    assert nodes.lines[mrml.MIDLINE_LINE_NAME].GetID() == line_id  # moved, not duplicated
    names = [n.GetName() for n in nodes.lines.values()]
    assert names.count(mrml.MIDLINE_LINE_NAME) == 1

    # the line follows a changed report too: without a measured shift it is removed
    report["clinical"]["midline_shift"]["line_endpoints"] = None
    logic.update_lines(nodes.segmentation, report["volumes"], report["clinical"])
    assert mrml.MIDLINE_LINE_NAME not in logic.result_nodes(nodes.segmentation).lines
    assert scene.GetFirstNodeByName(mrml.MIDLINE_LINE_NAME) is None


def test_gcs_and_age_reach_the_background_worker(scene, logic, phantom, without_templates, tmp_path):
    from ICHAnalyzerLib.errors import InputError
    from ICHAnalyzerLib.io import write_labelmap_nifti

    command = worker_command(sys.executable, tmp_path / "in.nrrd", tmp_path / "out", "cpu", None, 7, 81)
    assert command[-4:] == ["--gcs", "7", "--age", "81"]
    assert "--gcs" not in worker_command(sys.executable, "in", "out")

    volume = add_ct(scene, phantom.ct, "phantom")
    with pytest.raises(InputError, match="GCS"):
        logic.start_background(volume, python=sys.executable, gcs=20)
    mask = tmp_path / "mask.nii.gz"
    write_labelmap_nifti(mask, phantom.labels, phantom.ct)
    job = logic.start_background(volume, mask_path=str(mask), python=sys.executable, gcs=7, age=81)
    assert job.wait(timeout=300) == 0, job.output
    nodes = logic.finish_background(job)
    score = logic.current_report(nodes.segmentation)["clinical"]["ich_score"]
    assert (score["gcs"], score["age"], score["gcs_points"], score["age_ge_80"]) == (7, 81, 1, True)
    check_midline_line(nodes, logic.current_report(nodes.segmentation))


def grown_iph(phantom, iterations: int) -> tuple[CTVolume, np.ndarray]:
    """The phantom with its IPH grown into the surrounding brain (new blood voxels, HU of the IPH)."""
    from scipy import ndimage as ndi

    iph_label = SUBTYPE_BY_KEY["IPH"].label
    labels = phantom.labels.copy()
    iph = labels == iph_label
    grown = ndi.binary_dilation(iph, iterations=iterations) & (labels == 0) & (phantom.ct.hu > 0)
    labels[grown] = iph_label
    hu = phantom.ct.hu.copy()
    hu[grown] = np.median(phantom.ct.hu[iph])
    return CTVolume(hu=hu, affine=phantom.ct.affine, source="phantom, IPH grown"), labels


def test_followup_comparison_flags_expansion(scene, logic, phantom, without_templates):
    baseline = add_ct(scene, phantom.ct, "baseline")
    followup_ct, followup_labels = grown_iph(phantom, iterations=2)
    followup = add_ct(scene, followup_ct, "follow-up")
    logic.analyze(baseline, labels=phantom.labels)
    with pytest.raises(Exception, match="analyse it first"):
        logic.compare_followup(baseline, followup)
    logic.analyze(followup, labels=followup_labels)

    comparison, table = logic.compare_followup(baseline, followup)
    v0 = logic.current_report(logic.find_result(baseline))["volumes"]
    v1 = logic.current_report(logic.find_result(followup))["volumes"]
    n0 = int((phantom.labels == 1).sum())
    n1 = int((followup_labels == 1).sum())
    assert (n1 - n0) / n0 > 0.33  # the grown IPH is an expansion by the relative criterion
    rows = {r["Subtype"]: r for r in mrml.table_rows(table)}
    assert list(rows) == [*SUBTYPE_KEYS, "Total"]
    for entry in comparison["volumes"]:
        key = entry["subtype"]
        change = v1[key]["volume_ml"] - v0[key]["volume_ml"]
        assert entry["change_ml"] == pytest.approx(change, abs=1e-3)
        row = rows["Total" if key == "total" else key]
        assert float(row["Change (mL)"]) == pytest.approx(change, abs=0.006)  # rounded twice
        assert float(row["Baseline (mL)"]) == pytest.approx(v0[key]["volume_ml"], abs=0.006)
    assert comparison["volumes"][0]["change_ml"] > 0
    assert rows["SDH"]["Change (mL)"] in ("0.00", "-0.00")
    expansion = comparison["expansion"]
    assert expansion["expansion_classic"] is True and expansion["expansion_revised"] is True
    assert expansion["iph_growth_pct"] == pytest.approx(100.0 * (n1 - n0) / n0, abs=0.2)
    assert "Expansion (classic" in mrml.expansion_summary(comparison)
    assert "YES" in mrml.expansion_summary(comparison)
    assert json.loads(table.GetAttribute(slicerlogic.COMPARISON_ATTRIBUTE)) == comparison
    assert logic.comparison_table(baseline) is table

    # the unchanged phantom against itself (another node): no expansion
    same = add_ct(scene, phantom.ct, "same")
    logic.analyze(same, labels=phantom.labels)
    comparison, _ = logic.compare_followup(baseline, same)
    assert comparison["expansion"]["expansion_classic"] is False
    assert comparison["expansion"]["expansion_revised"] is False
    assert all(entry["change_ml"] == 0 for entry in comparison["volumes"])
