"""Follow-up comparison: expansion definitions, and a synthetic pair with a known rigid motion."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ICHAnalyzerLib import compare
from ICHAnalyzerLib.io import write_ct, write_labelmap_nifti
from ICHAnalyzerLib.phantom import make_phantom
from ICHAnalyzerLib.pipeline import analyze_volume
from ICHAnalyzerLib.volume import CTVolume
from scipy import ndimage as ndi


def _vol(iph: float, ivh: float) -> dict:
    return {"IPH": {"volume_ml": iph}, "IVH": {"volume_ml": ivh}}


@pytest.mark.parametrize(("iph0", "iph1", "ivh0", "ivh1", "classic", "revised"), [
    (10.0, 17.0, 0.0, 0.0, True, True),     # +7 mL
    (20.0, 26.0, 0.0, 0.0, False, False),   # +6 mL (not above 6) and +30 %
    (10.0, 16.0, 0.0, 0.0, True, True),     # +6 mL but +60 %
    (3.0, 4.5, 0.0, 0.0, True, True),       # +1.5 mL but +50 %
    (20.0, 22.0, 0.0, 0.0, False, False),   # +2 mL, +10 %
    (20.0, 22.0, 0.0, 0.3, False, True),    # new IVH
    (20.0, 22.0, 0.5, 1.4, False, False),   # IVH +0.9 mL
    (20.0, 22.0, 0.5, 1.5, False, True),    # IVH +1.0 mL
    (0.0, 2.0, 0.0, 0.0, None, None),       # new IPH of 2 mL: relative growth undefined
    (0.0, 8.0, 0.0, 0.0, True, True),       # new IPH above 6 mL
])
def test_expansion_definitions(iph0, iph1, ivh0, ivh1, classic, revised):
    flags = compare.expansion(_vol(iph0, ivh0), _vol(iph1, ivh1))
    assert flags["expansion_classic"] is classic
    assert flags["expansion_revised"] is revised


def _rigid(angle_deg: float, axis: np.ndarray, centre: np.ndarray, shift: np.ndarray) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.radians(angle_deg)
    rotation = np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = centre - rotation @ centre + shift
    return matrix


@pytest.fixture(scope="module")
def pair():
    """Baseline phantom; follow-up = the same head moved rigidly in patient space, IPH grown."""
    base = make_phantom(seed=5)
    motion = _rigid(7.0, np.array([0.2, 0.1, 1.0]), np.array([0.0, 10.0, 0.0]), np.array([6.0, -4.0, 3.0]))
    labels1 = base.labels.copy()
    grown = ndi.binary_dilation(labels1 == 1, iterations=3) & (labels1 == 0)
    labels1[grown] = 1
    hu1 = base.ct.hu.copy()
    hu1[grown] = 68
    followup_ct = CTVolume(hu=hu1, affine=motion @ base.ct.affine, source="synthetic follow-up")
    return base, followup_ct, labels1, motion


def test_synthetic_pair_registration_volumes_and_flags(pair):
    base, followup_ct, labels1, motion = pair
    result0 = analyze_volume(base.ct, labels=base.labels)
    result1 = analyze_volume(followup_ct, labels=labels1)
    comparison, on_baseline = compare.compare_results(result0, result1)
    matrix = np.array(comparison["registration"]["baseline_to_followup_lps"])
    # points across the head land where the known motion puts them
    points = np.array([[x, y, z] for x in (-50, 0, 50) for y in (-60, 0, 60) for z in (-30, 0, 30)], float)
    error = np.linalg.norm((points @ matrix[:3, :3].T + matrix[:3, 3]) - (points @ motion[:3, :3].T
                                                                         + motion[:3, 3]), axis=1)
    assert error.mean() < 1.0 and error.max() < 2.0  # 5 mm slices, 3 mm registration grid
    assert comparison["registration"]["brain_dice"] > 0.95
    rows = {row["subtype"]: row for row in comparison["volumes"]}
    assert rows["IPH"]["followup_ml"] > rows["IPH"]["baseline_ml"] + 3.0
    assert rows["SDH"]["change_ml"] == pytest.approx(0.0, abs=0.05)  # unchanged, moved only
    flags = comparison["expansion"]
    assert flags["iph_growth_ml"] == pytest.approx(rows["IPH"]["change_ml"], abs=1e-3)
    assert flags["expansion_classic"] is (flags["iph_growth_ml"] > 6.0 or flags["iph_growth_pct"] > 33.0)
    # the follow-up labels brought back onto the baseline grid cover the baseline IPH
    iph0 = base.labels == 1
    assert (on_baseline[iph0] == 1).mean() > 0.9


def test_compare_writes_the_output_folder(pair, tmp_path):
    base, followup_ct, labels1, _ = pair
    write_ct(tmp_path / "b.nii.gz", base.ct)
    write_labelmap_nifti(tmp_path / "b_mask.nii.gz", base.labels, base.ct)
    write_ct(tmp_path / "f.nii.gz", followup_ct)
    write_labelmap_nifti(tmp_path / "f_mask.nii.gz", labels1, followup_ct)
    out = tmp_path / "cmp"
    comparison = compare.compare(tmp_path / "b.nii.gz", tmp_path / "f.nii.gz", out,
                                 baseline_mask=tmp_path / "b_mask.nii.gz",
                                 followup_mask=tmp_path / "f_mask.nii.gz")
    names = sorted(p.name for p in out.iterdir())
    assert names == ["baseline", "comparison.csv", "comparison.json", "followup",
                     "followup_labels_on_baseline.nii.gz"]
    assert json.loads((out / "comparison.json").read_text()) == comparison
    header = (out / "comparison.csv").read_text().splitlines()[0]
    assert header == "subtype,baseline_ml,followup_ml,change_ml,change_pct"
    assert (out / "baseline" / "report.json").is_file() and (out / "followup" / "report.json").is_file()
    with pytest.raises(Exception, match="already exists"):
        compare.compare(tmp_path / "b.nii.gz", tmp_path / "f.nii.gz", out)


def test_compare_without_labels_refuses_instead_of_reporting_no_growth(pair, tmp_path, monkeypatch, capsys):
    """No model and no masks: empty label maps must not produce 0 mL volumes and 'no expansion'."""
    from ICHAnalyzerLib import pipeline
    from ICHAnalyzerLib.cli import main

    monkeypatch.setattr(pipeline, "_run_model",
                        lambda *a, **k: pipeline.ModelRun(reason="no model is installed"))
    base, followup_ct, _, _ = pair
    write_ct(tmp_path / "b.nii.gz", base.ct)
    write_ct(tmp_path / "f.nii.gz", followup_ct)
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "b.nii.gz"), str(tmp_path / "f.nii.gz"), "-o", str(out),
                 "--quiet"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no model is installed" in err[0] and "--baseline-mask" in err[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cmp")]


def test_registration_without_brain_is_an_input_error(pair):
    """An empty (or tiny) intracranial mask: one clear InputError, not an internal ValueError."""
    from ICHAnalyzerLib.atlas import ct_on_lps_grid
    from ICHAnalyzerLib.errors import InputError

    base = pair[0]
    with pytest.raises(InputError, match="No intracranial region"):
        ct_on_lps_grid(base.ct, np.zeros(base.ct.shape, bool), 3.0)
    tiny = np.zeros(base.ct.shape, bool)
    tiny[10, 101, 101] = True  # missed by the coarse 8-voxel sampling: still registered from its voxels
    image, mask = ct_on_lps_grid(base.ct, tiny, 3.0)
    assert mask.GetSize()[0] > 0
