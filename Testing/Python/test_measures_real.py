"""Clinical measures on real series (../shared): midline shift, registration, hematoma location."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import series_dir
from ICHAnalyzerLib import atlas as atlas_module
from ICHAnalyzerLib import measures
from ICHAnalyzerLib.brainmask import brain_mask
from ICHAnalyzerLib.io import load_ct
from ICHAnalyzerLib.report import report_schema
from ICHAnalyzerLib.volumetry import measure_labels

# normal series (no hemorrhage): untilted, 22 deg and 16.5 deg gantry tilt
NORMAL_SERIES = ("ID_18f2d431", "ID_9e4c2f60", "ID_fc08e4cf")
_CASES: dict[str, tuple] = {}


@pytest.fixture(scope="module")
def atlas():
    folder = atlas_module.find_templates()
    if folder is None:
        pytest.skip("template/atlas files absent (../shared/data/templates)")
    return atlas_module.load_atlas(folder)


def _case(cache, prefix, atlas):
    """Loaded CT, brain mask and template registration of a series (computed once per session)."""
    if prefix not in _CASES:
        ct = load_ct(series_dir(cache, prefix))
        brain = brain_mask(ct)
        plane = measures.symmetry_plane(ct, brain)
        _CASES[prefix] = (ct, brain, atlas_module.register(ct, brain, atlas, midline=plane))
    return _CASES[prefix]


def _plane(result):
    return {"point": np.array(result["ideal_midline"]["point_lps"]),
            "normal": np.array(result["ideal_midline"]["normal_lps"])}


@pytest.mark.parametrize("prefix", NORMAL_SERIES)
def test_normal_series_have_no_midline_shift(shared_cache, atlas, prefix):
    ct, brain, registration = _case(shared_cache, prefix, atlas)
    result = measures.midline_shift(ct, brain, registration)
    assert result["shift_mm"] is not None, result["note"]
    assert result["shift_mm"] < 2.0
    assert result["reliable"]
    start, end = np.array(result["line_endpoints"])
    assert np.linalg.norm(end - start) == pytest.approx(result["shift_mm"], abs=0.02)
    described = report_schema()["$defs"]["clinical"]["properties"]["midline_shift"]["properties"]
    assert set(result) <= set(described)  # every field written is described in the report schema


@pytest.mark.slow
def test_simulated_6mm_shift_is_recovered_within_1mm(shared_cache, atlas):
    ct, brain, registration = _case(shared_cache, NORMAL_SERIES[0], atlas)
    base = measures.midline_shift(ct, brain, registration)
    plane = _plane(base)
    septum = base["septum_point_lps"]
    shifted, field = measures.simulate_midline_shift(ct, brain, septum, plane["normal"], -6.0)
    assert field.displacement(base["septum_point_lps"]) == pytest.approx(-6.0, abs=0.01)
    brain_s = brain_mask(shifted)
    plane_s = measures.symmetry_plane(shifted, brain_s)
    registration_s = atlas_module.register(shifted, brain_s, atlas, midline=plane_s)
    result = measures.midline_shift(shifted, brain_s, registration_s, plane_s)
    expected = measures.expected_shift_on_slice(ct, brain, plane, result["slice_index"], field, registration)
    assert expected < -4.0  # the septum really moved to the patient's right
    assert result["signed_shift_mm"] == pytest.approx(expected, abs=1.0)
    assert result["direction"] == "toward patient right"


@pytest.mark.parametrize("prefix", NORMAL_SERIES[:2])
def test_registration_overlaps_the_template_brain(shared_cache, atlas, prefix):
    ct, brain, registration = _case(shared_cache, prefix, atlas)
    assert registration.brain_dice > 0.78
    # landmark: the scan's own symmetry plane maps onto the template's mid-sagittal plane (x = 0)
    result = measures.midline_shift(ct, brain, registration)
    plane = _plane(result)
    u = np.cross(plane["normal"], ct.slice_normal)
    v = np.cross(plane["normal"], u)
    offsets = np.array([(a, b) for a in range(-50, 51, 10) for b in range(-30, 31, 10)], float)
    points = plane["point"] + offsets[:, :1] * u + offsets[:, 1:] * v
    template_x = registration.to_template(points)[:, 0]
    assert np.abs(template_x).mean() < 4.0
    # and the septum lands between the template's lateral ventricles
    septum = registration.to_template(result["septum_point_lps"])[0]
    assert abs(septum[0]) < 5.0
    assert -30 < -septum[1] < 35 and -5 < septum[2] < 35  # MNI y (= -LPS y) and z


def _ball(ct, labels, centre, radius_mm, value):
    nk, nj, ni = ct.shape
    jj, ii = np.mgrid[0:nj, 0:ni]
    for k in range(nk):
        points = ct.voxel_to_lps(np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, k)], axis=1))
        inside = (np.linalg.norm(points - centre, axis=1) <= radius_mm).reshape(nj, ni)
        labels[k][inside] = value


def test_location_of_hematomas_placed_by_anatomy(shared_cache, atlas):
    """Blobs placed from the image itself (not from the atlas): left cerebellar hemisphere, right
    basal ganglia (lateral-posterior of the frontal horn), right frontal lobe under the inner table.
    (The atlas has no white-matter label: deep regions include the deep white matter around them.)"""
    ct, brain, registration = _case(shared_cache, NORMAL_SERIES[0], atlas)
    base = measures.midline_shift(ct, brain, registration)
    n = np.array(base["ideal_midline"]["normal_lps"])  # toward the patient's left
    centre = np.array(base["ideal_midline"]["point_lps"])
    septum = np.array(base["septum_point_lps"])
    posterior = np.cross(ct.slice_normal, n)
    posterior *= np.sign(posterior[1])  # LPS +y is posterior

    def inside(point):
        i, j, k = np.rint(ct.lps_to_voxel(point)[0]).astype(int)
        return bool(brain[k, j, i])

    # right frontal lobe: 12 mm under the inner table, 30 mm right of the midline, level of the septum
    frontal_right = septum - 30.0 * n - 100.0 * posterior
    while not inside(frontal_right):
        frontal_right = frontal_right + posterior
    frontal_right = frontal_right + 12.0 * posterior
    deep_right = septum - 22.0 * n + 10.0 * posterior
    ks = np.flatnonzero(brain.any(axis=(1, 2)))
    k_low = int(ks.min() + 0.15 * (ks.max() - ks.min()))  # posterior fossa level
    jj, ii = np.nonzero(brain[k_low])
    points = ct.voxel_to_lps(np.stack([ii, jj, np.full(ii.size, k_low)], axis=1))
    depth = points @ posterior
    back = points[depth > np.percentile(depth, 70)].mean(axis=0)
    cerebellum_left = back - ((back - centre) @ n) * n + 22.0 * n

    labels = np.zeros(ct.shape, np.uint8)
    _ball(ct, labels, cerebellum_left, 9.0, 1)  # largest: the ICH score's site
    _ball(ct, labels, deep_right, 7.0, 1)
    _ball(ct, labels, frontal_right, 6.0, 1)
    volumes = measure_labels(labels, ct.affine)
    assert len(volumes["IPH"]["hematomas"]) == 3
    clinical = measures.clinical_measures(ct, labels, brain, volumes, gcs=14, age=60)
    by_id = {h["id"]: h for h in clinical["location"]["hematomas"]}
    got = {}
    for hem in volumes["IPH"]["hematomas"]:
        c = np.array(hem["centroid_lps"])
        name = min((("cerebellum_left", cerebellum_left), ("deep_right", deep_right),
                    ("frontal_right", frontal_right)), key=lambda t: np.linalg.norm(t[1] - c))[0]
        got[name] = by_id[hem["id"]]
    assert got["cerebellum_left"]["region"] == "infratentorial"
    assert got["cerebellum_left"]["side"] == "left"
    assert got["cerebellum_left"]["atlas_regions"][0]["name"] == "LeftCerebellum"
    assert got["deep_right"]["region"] == "deep" and got["deep_right"]["side"] == "right"
    assert got["deep_right"]["atlas_regions"][0]["name"].startswith("Right")
    assert got["frontal_right"]["region"] == "lobar", got["frontal_right"]
    assert got["frontal_right"]["side"] == "right"
    assert "Frontal" in got["frontal_right"]["atlas_regions"][0]["name"]
    score = clinical["ich_score"]
    assert score["infratentorial_origin"] is True
    assert score["score"] == 1  # GCS 14 -> 0, < 30 mL, no IVH, infratentorial -> 1, age 60 -> 0


@pytest.mark.parametrize("prefix", NORMAL_SERIES)
def test_atlas_ventricles_land_on_the_scans_csf(shared_cache, atlas, prefix):
    """The ventricle prior's mask (atlas ventricles mapped onto the CT grid) sits on the patient's CSF
    spaces, straddling the midline: misplaced by a wrong affine it would cover brain tissue (25-40 HU)."""
    ct, brain, registration = _case(shared_cache, prefix, atlas)
    ventricles = atlas_module.region_mask(ct, brain, registration, atlas, "ventricular")
    assert ventricles.shape == ct.shape and not (ventricles & ~brain).any()
    assert 15.0 < ventricles.sum() * ct.voxel_volume_mm3 / 1000.0 < 120.0
    csf_inside = (ct.hu[ventricles] < 18).mean()
    csf_outside = (ct.hu[brain & ~ventricles] < 18).mean()
    assert csf_inside > 3 * csf_outside  # measured 5-12x on these series
    plane = measures.symmetry_plane(ct, brain)
    kji = np.argwhere(ventricles)
    points = ct.voxel_to_lps(kji[:, ::-1])
    signed = (points - plane["point"]) @ (plane["normal"] / np.linalg.norm(plane["normal"]))
    assert abs(signed.mean()) < 5.0 and np.abs(signed).mean() > 5.0  # both sides, centred
