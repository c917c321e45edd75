"""Command line and pipeline: outputs, report schema, --mask, errors, atomic output folder."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import nibabel as nib
import numpy as np
import pytest
import slicerio
from conftest import REPO, series_dir
from ICHAnalyzerLib import pipeline
from ICHAnalyzerLib.atlas import find_templates
from ICHAnalyzerLib.cli import main
from ICHAnalyzerLib.constants import SUBTYPE_KEYS
from ICHAnalyzerLib.io import write_ct, write_labelmap_nifti
from ICHAnalyzerLib.phantom import make_phantom
from ICHAnalyzerLib.report import validate_report
from ICHAnalyzerLib.volume import CTVolume, lps_to_ras


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory):
    """The tilted phantom as a NIfTI CT and its true label map on the same grid."""
    ph = make_phantom(seed=3, tilt_deg=15.0)
    folder = tmp_path_factory.mktemp("phantom")
    write_ct(folder / "ct.nii.gz", ph.ct)
    write_labelmap_nifti(folder / "truth.nii.gz", ph.labels, ph.ct)
    return ph, folder / "ct.nii.gz", folder / "truth.nii.gz"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ICHAnalyzerLib", *args], capture_output=True, text=True,
                          cwd=REPO, env={"PYTHONPATH": str(REPO / "ICHAnalyzer"), "PATH": "/usr/bin:/bin"},
                          timeout=300)


def test_analyze_with_mask_writes_consistent_outputs(phantom_files, tmp_path):
    ph, ct_path, truth_path = phantom_files
    out = tmp_path / "out"
    assert main(["analyze", str(ct_path), "-o", str(out), "--mask", str(truth_path), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(pipeline.OUTPUT_FILES)
    report = json.loads((out / "report.json").read_text())
    validate_report(report)
    assert report["source_of_labels"] == "mask"
    # no model ran: probabilities are null with a reason, never invented
    assert all(report["detection"][k] is None for k in ("any", *SUBTYPE_KEYS))
    assert "mask" in report["detection"]["reason"]
    # volumes are voxel counts x true (sheared-grid) voxel size
    voxel_ml = ph.ct.voxel_volume_mm3 / 1000.0
    for sub in ph_subtypes(ph):
        count = int((ph.labels == sub.label).sum())
        assert report["volumes"][sub.key]["voxel_count"] == count
        assert report["volumes"][sub.key]["volume_ml"] == pytest.approx(count * voxel_ml, rel=1e-3)
    # label map lines up with the input in physical space (same RAS affine, same voxels)
    img = nib.load(out / "labelmap.nii.gz")
    assert np.allclose(img.affine, lps_to_ras(ph.ct.affine), atol=1e-4)
    assert np.array_equal(np.asarray(img.dataobj).transpose(2, 1, 0), ph.labels)
    # the Slicer segmentation holds the same voxels per segment
    seg = slicerio.read_segmentation(str(out / "segmentation.seg.nrrd"))
    for segment in seg["segments"]:
        expected = int((ph.labels == segment["labelValue"]).sum())
        assert expected > 0
        voxels = seg["voxels"] if seg["voxels"].ndim == 3 else seg["voxels"][..., segment.get("layer", 0)]
        assert int((voxels == segment["labelValue"]).sum()) == expected
    csv_lines = (out / "report.csv").read_text().splitlines()
    assert csv_lines[0].startswith("level,subtype")
    assert len(csv_lines) >= 1 + len(SUBTYPE_KEYS) + 1


def ph_subtypes(ph):
    from ICHAnalyzerLib.constants import SUBTYPES

    return [s for s in SUBTYPES if (ph.labels == s.label).any()]


def test_existing_outdir_needs_force(phantom_files, tmp_path):
    _, ct_path, truth_path = phantom_files
    out = tmp_path / "out"
    out.mkdir()
    (out / "user_notes.txt").write_text("keep me")
    args = ["analyze", str(ct_path), "-o", str(out), "--mask", str(truth_path), "--quiet"]
    assert main(args) == 2
    assert (out / "user_notes.txt").read_text() == "keep me"
    assert main([*args, "--force"]) == 0
    assert (out / "report.json").exists()


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_interrupted_write_leaves_nothing_behind(phantom_files, tmp_path, monkeypatch, exc):
    _, ct_path, truth_path = phantom_files
    out = tmp_path / "out"

    def broken(*_args, **_kwargs):
        raise exc("stopped while writing")

    monkeypatch.setattr(pipeline, "write_report", broken)
    with pytest.raises(exc):
        pipeline.analyze(ct_path, out, mask_path=truth_path)
    assert list(tmp_path.iterdir()) == []  # neither the output folder nor a temporary one


def test_interrupted_force_keeps_previous_results(phantom_files, tmp_path, monkeypatch):
    _, ct_path, truth_path = phantom_files
    out = tmp_path / "out"
    pipeline.analyze(ct_path, out, mask_path=truth_path)
    before = (out / "report.json").read_text()
    monkeypatch.setattr(pipeline, "write_report", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        pipeline.analyze(ct_path, out, mask_path=truth_path, force=True)
    assert (out / "report.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_mask_on_another_grid_is_a_clear_error(phantom_files, tmp_path):
    ph, ct_path, _ = phantom_files
    other = tmp_path / "other.nii.gz"
    cropped = CTVolume(ph.ct.hu[:-2], ph.ct.affine)
    write_labelmap_nifti(other, ph.labels[:-2], cropped)
    result = run_cli("analyze", str(ct_path), "-o", str(tmp_path / "out"), "--mask", str(other))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("make_input", ["missing", "empty_dir", "text_file"])
def test_bad_input_one_line_error(tmp_path, make_input):
    if make_input == "missing":
        path = tmp_path / "nope"
    elif make_input == "empty_dir":
        path = tmp_path / "empty"
        path.mkdir()
    else:
        path = tmp_path / "notes.nii.gz"
        path.write_text("not an image")
    result = run_cli("analyze", str(path), "-o", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ichanalyzer: error:")
    assert not (tmp_path / "out").exists()


def test_schema_rejects_invented_or_malformed_values(phantom_files, tmp_path):
    _, ct_path, truth_path = phantom_files
    report = pipeline.analyze(ct_path, tmp_path / "out", mask_path=truth_path).report
    bad = json.loads(json.dumps(report))
    bad["detection"]["IPH"] = 1.5
    with pytest.raises(jsonschema.ValidationError):
        validate_report(bad)
    bad = json.loads(json.dumps(report))
    del bad["volumes"]["SDH"]
    with pytest.raises(jsonschema.ValidationError):
        validate_report(bad)


def test_real_series_analyze_report_per_input_slice(shared_cache, tmp_path, monkeypatch):
    from ICHAnalyzerLib import atlas

    registrations = []
    register = atlas.register
    monkeypatch.setattr(atlas, "register", lambda *a, **k: registrations.append(1) or register(*a, **k))
    folder = series_dir(shared_cache, "ID_cd5a85fd")
    out = tmp_path / "out"
    assert main(["analyze", str(folder), "-o", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    validate_report(report)
    if report["model"] is not None and find_templates() is not None:
        # the ventricle prior's registration is the one the clinical measures use: made once
        assert report["model"]["ventricle_prior"].startswith("applied")
        assert len(registrations) == 1 and report["clinical"]["location"] is not None
        assert report["timing_s"]["registration"] > 0
    files = sorted(folder.glob("*.dcm"))
    assert len(report["slices"]) == len(files)
    assert {s["sop_instance_uid"] for s in report["slices"]} == {f.stem for f in files}
    z = [s["z_mm"] for s in report["slices"]]
    assert np.all(np.diff(z) > 0)
    assert 1100 <= report["brain"]["intracranial_volume_ml"] <= 1900


def test_demo_prints_truth_next_to_measures(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "demo"), "--truth-mask", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "true mL" in text and "ABC/2 mL" in text
    for key in SUBTYPE_KEYS:
        assert any(line.strip().startswith(key) for line in text.splitlines())


def test_ich_score_completed_only_by_clinical_flags(phantom_files, tmp_path):
    _, ct_path, truth_path = phantom_files
    base = ["analyze", str(ct_path), "--mask", str(truth_path), "--quiet"]
    assert main([*base, "-o", str(tmp_path / "a")]) == 0
    partial = json.loads((tmp_path / "a" / "report.json").read_text())["clinical"]["ich_score"]
    assert partial["score"] is None and set(partial["missing"]) >= {"GCS", "age"}
    assert main([*base, "-o", str(tmp_path / "b"), "--gcs", "4", "--age", "85"]) == 0
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    validate_report(report)
    full = report["clinical"]["ich_score"]
    assert full["gcs_points"] == 2 and full["age_ge_80"] is True
    if find_templates() is None:  # no atlas (e.g. a worktree without ../shared): origin unknown, no score
        assert full["missing"] == ["infratentorial origin"] and full["score"] is None
    else:
        # GCS 3-4 gives 2 points, age >= 80 one more, IVH present in the phantom one more
        assert full["missing"] == [] and full["score"] >= 4


def test_no_labels_means_no_clinical_section(shared_cache, tmp_path, monkeypatch):
    """Without a model or a mask nothing was segmented: clinical measures must not read it as 'no bleed'."""
    monkeypatch.setattr(pipeline, "_run_model",
                        lambda *a, **k: pipeline.ModelRun(reason="no model is installed"))
    folder = series_dir(shared_cache, "ID_cd5a85fd")
    report = pipeline.analyze(folder, tmp_path / "out").report
    assert report["source_of_labels"] == "none" and report["clinical"] is None
    assert report["detection"]["any"] is None and report["detection"]["reason"] == "no model is installed"
    assert all(s["probabilities"]["any"] is None for s in report["slices"])


@pytest.mark.parametrize("flags", [["--gcs", "20"], ["--gcs", "2"], ["--age", "-3"]])
def test_implausible_gcs_or_age_refused_before_any_work(phantom_files, tmp_path, capsys, monkeypatch, flags):
    """Even when no labels exist (no model, no --mask), a bad --gcs/--age is one clear error, no output."""
    monkeypatch.setattr(pipeline, "_run_model",
                        lambda *a, **k: pipeline.ModelRun(reason="no model is installed"))
    _, ct_path, _ = phantom_files
    out = tmp_path / "out"
    assert main(["analyze", str(ct_path), "-o", str(out), "--quiet", *flags]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("GCS must be 3..15" in err[0] or "age must be 0..130" in err[0])
    assert not out.exists()


def _undescribed(value, schema: dict, root: dict, path: str = "") -> set[str]:
    """Paths of object keys in ``value`` that ``schema`` (resolving $ref, allOf, oneOf) does not name."""
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    parts = [schema, *schema.get("allOf", [])]
    alternatives = [s for s in schema.get("oneOf", []) if s.get("type") != "null"]
    if alternatives:
        return set.intersection(*(_undescribed(value, s, root, path) for s in alternatives))
    parts = [root["$defs"][p["$ref"].rsplit("/", 1)[-1]] if "$ref" in p else p for p in parts]
    missing: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            named = [p["properties"][key] for p in parts if key in p.get("properties", {})]
            named += [p["additionalProperties"] for p in parts
                      if isinstance(p.get("additionalProperties"), dict)]
            if not named:
                missing.add(f"{path}.{key}")
            for sub in named:
                missing |= _undescribed(item, sub, root, f"{path}.{key}")
    elif isinstance(value, list):
        for p in parts:
            if "items" in p:
                for item in value:
                    missing |= _undescribed(item, p["items"], root, f"{path}[]")
    return missing


@pytest.fixture(scope="module")
def outdir_with_patient(phantom_files, tmp_path_factory):
    """One analysis of the phantom with its true labels and GCS 10 / age 70, shared by the tests below."""
    _, ct_path, truth_path = phantom_files
    out = tmp_path_factory.mktemp("with_patient") / "out"
    assert main(["analyze", str(ct_path), "-o", str(out), "--mask", str(truth_path), "--quiet",
                 "--gcs", "10", "--age", "70"]) == 0
    return out


def test_every_report_field_is_described_in_the_schema(outdir_with_patient):
    from ICHAnalyzerLib.report import report_schema

    report = json.loads((outdir_with_patient / "report.json").read_text())
    assert report["clinical"]["ich_score"]["gcs"] == 10
    schema = report_schema()
    assert _undescribed(report, schema, schema) == set()


def test_csv_carries_clinical_measures(outdir_with_patient):
    """A clinician reading only report.csv sees midline shift, ICH score, volume and hematoma location."""
    import csv

    out = outdir_with_patient
    report = json.loads((out / "report.json").read_text())
    with open(out / "report.csv") as f:
        rows = list(csv.DictReader(f))
    total = next(r for r in rows if r["level"] == "scan" and r["subtype"] == "total")
    score = report["clinical"]["ich_score"]["score"]
    assert total["ich_score"] == ("" if score is None else str(score))
    shift = report["clinical"]["midline_shift"]["shift_mm"]
    assert total["midline_shift_mm"] == ("" if shift is None else str(shift))
    assert float(total["intracranial_volume_ml"]) == report["brain"]["intracranial_volume_ml"]
    location = report["clinical"]["location"]
    hematoma_rows = {(r["subtype"], r["hematoma_id"]): r for r in rows if r["level"] == "hematoma"}
    for place in (location or {}).get("hematomas", []):
        assert hematoma_rows[(place["subtype"], str(place["id"]))]["region"] == place["region"]


def test_table_without_labels_shows_no_volumes(phantom_files, tmp_path, capsys, monkeypatch):
    """No model and no --mask: the table must not print '0.00 mL' as if no hemorrhage had been found."""
    monkeypatch.setattr(pipeline, "_run_model",
                        lambda *a, **k: pipeline.ModelRun(reason="no model is installed"))
    _, ct_path, _ = phantom_files
    assert main(["analyze", str(ct_path), "-o", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.split() and line.split()[0] in (*SUBTYPE_KEYS, "total")]
    assert len(rows) == len(SUBTYPE_KEYS) + 1
    assert all(row[1] == "-" for row in rows)
    assert any("no model is installed" in line for line in lines)


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self"), reason="needs /proc (Linux)")
def test_unwritable_output_folder_is_one_clear_error(phantom_files, capsys):
    """/proc accepts no new folders, even for root: an output error, not an internal one."""
    _, ct_path, truth_path = phantom_files
    for argv in (["analyze", str(ct_path), "--mask", str(truth_path)],
                 ["compare", str(ct_path), str(ct_path), "--baseline-mask", str(truth_path),
                  "--followup-mask", str(truth_path)]):
        assert main([*argv, "-o", "/proc/ichanalyzer-out", "--quiet"]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("ichanalyzer: error:") and "/proc" in err[0], err


def test_without_templates_the_ventricle_prior_is_off(phantom_files, tmp_path, capsys, monkeypatch):
    """No template files (a pip install without ../shared): the model still runs, and the table and the
    report say that IVH is then not separated from IPH by the atlas."""
    from ICHAnalyzerLib import atlas
    from ICHAnalyzerLib.inference import default_model_available

    if not default_model_available():
        pytest.skip("no model installed")
    monkeypatch.setattr(atlas, "find_templates", lambda: None)
    _, ct_path, _ = phantom_files
    out = tmp_path / "out"
    assert main(["analyze", str(ct_path), "-o", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["ventricle_prior"].startswith("not applied: template/atlas files not found")
    assert report["detection"]["IVH"] is not None  # the model's own scores, not invented
    assert report["clinical"]["location"] is None and "not found" in report["clinical"]["location_reason"]
    assert "ventricle prior was not applied" in capsys.readouterr().out


def test_unreliable_registration_leaves_the_ventricle_prior_off(phantom_files, tmp_path, monkeypatch):
    """A registration that does not overlay the template brain on the scan's must not relabel blood."""
    from ICHAnalyzerLib import atlas
    from ICHAnalyzerLib.inference import default_model_available

    if not default_model_available() or find_templates() is None:
        pytest.skip("needs the model and the template files")
    register = atlas.register

    def poor_registration(*args, **kwargs):
        registration = register(*args, **kwargs)
        registration.brain_dice = 0.5
        return registration

    monkeypatch.setattr(atlas, "register", poor_registration)
    _, ct_path, _ = phantom_files
    out = tmp_path / "out"
    assert main(["analyze", str(ct_path), "-o", str(out), "--quiet"]) == 0
    prior = json.loads((out / "report.json").read_text())["model"]["ventricle_prior"]
    assert prior.startswith("not applied: registration to the template unreliable (brain Dice 0.50")


def test_failed_registration_is_reported_not_raised(phantom_files, tmp_path, monkeypatch):
    """A registration error (e.g. an unreadable template) costs the prior and the location, not the run."""
    from ICHAnalyzerLib import atlas

    if find_templates() is None:
        pytest.skip("needs the template files")

    def broken(*args, **kwargs):
        raise RuntimeError("Exception thrown in SimpleITK ImageRegistrationMethod_Execute:\n  metric failed")

    monkeypatch.setattr(atlas, "register", broken)
    _, ct_path, _ = phantom_files
    out = tmp_path / "out"
    assert main(["analyze", str(ct_path), "-o", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    reason = report["clinical"]["location_reason"]
    assert reason.startswith("registration to the template failed (Exception thrown in SimpleITK")
    assert "\n" not in reason and report["clinical"]["location"] is None
    if report["model"] is not None:
        prior = report["model"]["ventricle_prior"]
        assert prior.startswith("not applied: registration to the template failed")
