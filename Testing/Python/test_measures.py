"""Clinical measures without real data: ICH score arithmetic, schema, symmetry plane, plumbing."""

from __future__ import annotations

import copy

import jsonschema
import numpy as np
import pytest
from ICHAnalyzerLib import atlas as atlas_module
from ICHAnalyzerLib import measures
from ICHAnalyzerLib.errors import InputError
from ICHAnalyzerLib.phantom import make_phantom
from ICHAnalyzerLib.report import validate_report
from ICHAnalyzerLib.volumetry import measure_labels


def _volumes(iph_ml: float = 0.0, ivh_ml: float = 0.0) -> dict:
    iph_hems = [{"id": 1, "voxel_count": 10, "centroid_lps": [0.0, 0.0, 0.0]}] if iph_ml else []
    return {"IPH": {"volume_ml": iph_ml, "hematomas": iph_hems},
            "IVH": {"volume_ml": ivh_ml, "hematomas": []}}


@pytest.mark.parametrize(("gcs", "points"), [(3, 2), (4, 2), (5, 1), (12, 1), (13, 0), (15, 0)])
def test_gcs_points_bands(gcs, points):
    assert measures.gcs_points(gcs) == points


def test_ich_score_all_parts():
    # GCS 4 -> 2, volume 35 mL -> 1, IVH -> 1, infratentorial -> 1, age 85 -> 1
    score = measures.ich_score(_volumes(35.0, 2.0), infratentorial_origin=True, gcs=4, age=85)
    assert score["score"] == 6
    assert score["missing"] == []
    score = measures.ich_score(_volumes(35.0, 2.0), infratentorial_origin=False, gcs=14, age=79)
    assert score["score"] == 2
    parts = (score["gcs_points"], score["age_ge_80"], score["volume_ge_30ml"], score["ivh"])
    assert parts == (0, False, True, True)


def test_ich_score_volume_threshold_is_inclusive():
    assert measures.ich_score(_volumes(29.99), False, 15, 50)["score"] == 0
    assert measures.ich_score(_volumes(30.0), False, 15, 50)["score"] == 1


def test_ich_score_never_guesses_missing_parts():
    score = measures.ich_score(_volumes(40.0, 1.0), infratentorial_origin=False)
    assert score["score"] is None
    assert score["missing"] == ["GCS", "age"]
    assert score["gcs_points"] is None and score["age_ge_80"] is None
    assert score["volume_ge_30ml"] is True and score["ivh"] is True  # imaging parts are still given
    only_gcs = measures.ich_score(_volumes(40.0), infratentorial_origin=False, gcs=8)
    assert only_gcs["score"] is None and only_gcs["missing"] == ["age"] and only_gcs["gcs_points"] == 1
    unknown_site = measures.ich_score(_volumes(40.0), infratentorial_origin=None, gcs=8, age=60)
    assert unknown_site["score"] is None and unknown_site["missing"] == ["infratentorial origin"]


@pytest.mark.parametrize(("gcs", "age"), [(2, 50), (16, 50), (10, -1), (10, 200)])
def test_ich_score_rejects_impossible_inputs(gcs, age):
    with pytest.raises(InputError):
        measures.ich_score(_volumes(10.0), False, gcs=gcs, age=age)


def test_infratentorial_origin_follows_the_largest_iph():
    volumes = {"IPH": {"volume_ml": 5.0, "hematomas": [
        {"id": 1, "voxel_count": 900, "centroid_lps": [0, 0, 0]},
        {"id": 2, "voxel_count": 100, "centroid_lps": [0, 0, 0]}]}}
    location = {"hematomas": [{"subtype": "IPH", "id": 1, "region": "infratentorial"},
                              {"subtype": "IPH", "id": 2, "region": "lobar"}]}
    assert measures._infratentorial_origin(volumes, location) is True
    location["hematomas"][0]["region"] = "deep"
    assert measures._infratentorial_origin(volumes, location) is False
    assert measures._infratentorial_origin(volumes, None) is None  # unknown without the atlas
    assert measures._infratentorial_origin({"IPH": {"volume_ml": 0.0, "hematomas": []}}, None) is False


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(seed=3, tilt_deg=18.0)


def test_symmetry_plane_of_a_tilted_phantom(phantom):
    """The phantom's cavity is symmetric about x = 0 (LPS); the grid is sheared by 18 degrees."""
    # the analytic inner-table ellipsoid as mask (independent of brainmask.py)
    nk, nj, ni = phantom.ct.shape
    jj, ii = np.mgrid[0:nj, 0:ni]
    brain = np.zeros(phantom.ct.shape, bool)
    for k in range(nk):
        p = phantom.ct.voxel_to_lps(np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, k)], axis=1))
        brain[k] = (((p / np.array([62.0, 80.0, 62.0])) ** 2).sum(axis=1) <= 1.0).reshape(nj, ni)
    plane = measures.symmetry_plane(phantom.ct, brain)
    normal = plane["normal"] * np.sign(plane["normal"][0])
    assert abs(plane["point"] @ normal) < 0.5  # offset of the plane from x = 0, mm
    assert np.degrees(np.arccos(min(1.0, normal[0]))) < 1.0


def test_hematoma_components_match_volumetry_ids(phantom):
    labels = phantom.labels.copy()
    # split the IPH in two pieces of different size to test the matching
    iph = np.argwhere(labels == 1)
    labels[tuple(iph[iph[:, 0] == iph[:, 0].max()].T)] = 0
    volumes = measure_labels(labels, phantom.ct.affine)
    for key, label in measures.SUBTYPE_LABEL.items():
        found = measures.hematoma_components(labels, label, volumes[key]["hematomas"], phantom.ct.affine)
        assert sorted(found) == sorted(h["id"] for h in volumes[key]["hematomas"])
        for hem in volumes[key]["hematomas"]:
            voxels = found[hem["id"]]
            assert len(voxels) == hem["voxel_count"]
            centroid = phantom.ct.voxel_to_lps(voxels[:, ::-1].mean(axis=0))[0]
            assert np.allclose(centroid, hem["centroid_lps"], atol=0.01)


def test_clinical_section_without_templates_is_null_with_a_reason(phantom, monkeypatch):
    monkeypatch.setattr(atlas_module, "find_templates", lambda: None)
    volumes = measure_labels(phantom.labels, phantom.ct.affine)
    brain = phantom.ct.hu > -100  # any non-empty mask will do here
    result = measures.clinical_measures(phantom.ct, phantom.labels, brain, volumes, gcs=10, age=70)
    assert result["location"] is None
    assert "not found" in result["location_reason"]
    assert result["ich_score"]["infratentorial_origin"] is None  # the phantom has an IPH: site unknown
    assert result["ich_score"]["score"] is None
    assert result["ich_score"]["missing"] == ["infratentorial origin"]


def test_clinical_schema(phantom):
    from ICHAnalyzerLib.pipeline import analyze_volume

    result = analyze_volume(phantom.ct, labels=phantom.labels)
    report = result.report
    report["clinical"] = measures.clinical_measures(phantom.ct, result.labels, result.brain,
                                                    report["volumes"], gcs=12, age=81)
    validate_report(report)  # the optional section, filled
    report_clinical = report["clinical"]
    report["clinical"] = None
    validate_report(report)  # and absent (null)
    del report["clinical"]
    validate_report(report)
    clinical = copy.deepcopy(report_clinical)
    clinical["ich_score"]["score"] = 9  # out of 0..6
    with pytest.raises(jsonschema.ValidationError):
        validate_report({**report, "clinical": clinical})
    clinical = copy.deepcopy(report_clinical)
    del clinical["midline_shift"]["reliable"]
    with pytest.raises(jsonschema.ValidationError):
        validate_report({**report, "clinical": clinical})
