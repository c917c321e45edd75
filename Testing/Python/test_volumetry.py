"""measure_labels: output structure, true voxel volume on sheared grids, end points, hematoma split."""

import json
import math

import numpy as np
import pytest
from ICHAnalyzerLib.constants import SUBTYPES
from ICHAnalyzerLib.errors import InputError
from ICHAnalyzerLib.volumetry import measure_labels
from volumetry_shapes import grid_affine, shell_sector, sphere

KEYS = [s.key for s in SUBTYPES] + ["total"]


def lps_to_index(affine, lps):
    return (np.asarray(lps, float) - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T


def test_empty_map_gives_empty_entries():
    result = measure_labels(np.zeros((3, 10, 10), np.uint8), np.diag([0.5, 0.5, 5.0, 1.0]))
    assert list(result) == KEYS
    for key in KEYS:
        entry = result[key]
        assert entry["voxel_count"] == 0 and entry["volume_ml"] == 0.0 and entry["hematomas"] == []
        assert entry["abc2_ml"] is None and entry["abc2"] is None and entry["abc2_difference_pct"] is None
        assert entry["max_thickness_mm"] is None and entry["thickness_endpoints"] is None
        assert ("label" in entry) == (key != "total")
    assert result["total"]["abc2_clinically_applicable"] is False
    json.dumps(result)


@pytest.mark.parametrize("tilt", [0.0, 20.0])
def test_volume_is_count_times_true_voxel_size_and_json_ready(tilt):
    affine = grid_affine(0.45, 0.45, 5.0, tilt_deg=tilt, yaw_deg=10.0, origin=(-100.0, -120.0, 30.0))
    shape = (10, 80, 80)
    labels = np.zeros(shape, np.uint8)
    centre = affine[:3, :3] @ [40.3, 40.2, 4.6] + affine[:3, 3]
    labels[sphere(shape, affine, centre, 12.0)] = 1
    labels[30:40, 2:6, 4] = 4  # a sliver of SDH
    result = measure_labels(labels, affine)
    voxel_mm3 = 0.45 * 0.45 * 5.0  # plane distance 5 mm, whatever the tilt (step length 5 / cos(tilt))
    for key, label in (("IPH", 1), ("SDH", 4)):
        count = int(np.count_nonzero(labels == label))
        assert result[key]["voxel_count"] == count
        assert result[key]["volume_ml"] == pytest.approx(count * voxel_mm3 / 1000, abs=1e-4)
    assert result["total"]["voxel_count"] == int(np.count_nonzero(labels))
    assert result["IPH"]["abc2"]["C_unweighted_mm"] == pytest.approx(
        5.0 * result["IPH"]["abc2"]["slices_counted_unweighted"])
    text = json.dumps(result)  # plain Python types only
    assert json.loads(text) == result


def test_rectangle_end_points_on_tilted_rotated_grid():
    """A square of n x n pixels on 3 slices: A is a diagonal between corner pixel centres (+1/4 pixel each
    end along it), B the other diagonal (edge to edge along the sampled line, -1/4 pixel each end: between
    the centre-to-centre diagonal and the corner-to-corner one), C = 3 plane distances, not 3 step lengths."""
    dx, dz, n = 0.6, 5.0, 21
    affine = grid_affine(dx, dx, dz, tilt_deg=20.0, yaw_deg=25.0, origin=(-50.0, 20.0, -10.0))
    labels = np.zeros((8, 60, 60), np.uint8)
    i0, j0, k0 = 10, 20, 2
    i1, j1 = i0 + n - 1, j0 + n - 1
    labels[k0:k0 + 3, j0:j1 + 1, i0:i1 + 1] = 1
    abc = measure_labels(labels, affine)["IPH"]["abc2"]

    diagonal = (n - 1) * dx * math.sqrt(2) + 0.5 * dx
    assert abc["A_mm"] == pytest.approx(diagonal, abs=0.011)
    centre_to_centre = (n - 1) * dx * math.sqrt(2)
    assert centre_to_centre <= abc["B_mm"] <= centre_to_centre + (math.sqrt(2) - 0.5) * dx + 0.01
    assert abc["slice_index"] == k0 and (abc["slices_full"], abc["slices_half"]) == (3, 0)
    assert abc["C_mm"] == pytest.approx(3 * dz) and abc["C_unweighted_mm"] == pytest.approx(3 * dz)
    assert 3 * np.linalg.norm(affine[:3, 2]) > 3 * dz + 0.9  # the step length would have given 15.96 mm

    e = 0.25 / math.sqrt(2)  # a quarter pixel along a diagonal, in index units
    main = [(i0 - e, j0 - e), (i1 + e, j1 + e)]
    anti = [(i0 - e, j1 + e), (i1 + e, j0 - e)]

    def lps(points):
        return sorted(map(tuple, np.round(affine[:3, :3] @ np.array([[i, j, k0] for i, j in points]).T
                                          + affine[:3, 3][:, None], 2).T))

    got_a = sorted(map(tuple, abc["A_endpoints"]))
    assert got_a in (lps(main), lps(anti))
    other = lps(anti) if got_a == lps(main) else lps(main)
    assert np.allclose(sorted(map(tuple, abc["B_endpoints"])), other, atol=dx / 2)
    for point in abc["A_endpoints"] + abc["B_endpoints"]:
        i, j, k = np.rint(lps_to_index(affine, point)).astype(int)
        assert labels[k, j, i] == 1


def test_two_blobs_split_into_hematomas_largest_first():
    affine = grid_affine(0.5, 0.5, 5.0, tilt_deg=20.0)
    shape = (12, 140, 160)
    small_c, big_c = np.array([20.0, 30.0, 27.0]), np.array([55.0, 35.0, 28.0])
    small, big = sphere(shape, affine, small_c, 7.0), sphere(shape, affine, big_c, 11.0)
    assert not np.any(small & big)
    labels = (small | big).astype(np.uint8) * 5
    iph = measure_labels(labels, affine)["EDH"]
    hematomas = iph["hematomas"]
    assert [h["id"] for h in hematomas] == [1, 2]
    assert [h["voxel_count"] for h in hematomas] == [int(big.sum()), int(small.sum())]
    assert hematomas[0]["volume_ml"] == pytest.approx(big.sum() * 1.25 / 1000, abs=1e-4)
    assert np.allclose(hematomas[0]["centroid_lps"], big_c, atol=0.6)
    assert np.allclose(hematomas[1]["centroid_lps"], small_c, atol=0.6)
    assert iph["voxel_count"] == sum(h["voxel_count"] for h in hematomas)
    assert iph["max_thickness_mm"] == hematomas[0]["max_thickness_mm"] > hematomas[1]["max_thickness_mm"]
    assert iph["thickness_endpoints"] == hematomas[0]["thickness_endpoints"]
    # the label-level A spans both blobs on the largest slice: longer than either blob's own A
    assert iph["abc2"]["A_mm"] > hematomas[0]["abc2"]["A_mm"] + 10


def test_full_connectivity_joins_corner_touching_voxels():
    labels = np.zeros((4, 10, 10), np.uint8)
    labels[1, 2:4, 2:4] = 3
    labels[2, 4:6, 4:6] = 3  # touches the first block at one corner only
    result = measure_labels(labels, np.diag([0.5, 0.5, 5.0, 1.0]))
    assert len(result["SAH"]["hematomas"]) == 1
    assert result["SAH"]["abc2_clinically_applicable"] is False


def test_applicability_and_total():
    affine = grid_affine(0.5, 0.5, 5.0)
    shape = (10, 200, 200)
    labels = np.zeros(shape, np.uint8)
    labels[sphere(shape, affine, np.array([50.0, 40.0, 25.0]), 10.0)] = 1
    only_iph = measure_labels(labels, affine)
    assert only_iph["IPH"]["abc2_clinically_applicable"] and only_iph["total"]["abc2_clinically_applicable"]
    assert only_iph["total"]["abc2_ml"] == only_iph["IPH"]["abc2_ml"]
    assert only_iph["IPH"]["max_thickness_mm"] is None and only_iph["total"]["max_thickness_mm"] is None
    labels[shell_sector(shape, affine, (50.0, 50.0), 40.0, 46.0, 40.0, (10.0, 35.0), direction_deg=-90)] = 4
    both = measure_labels(labels, affine)
    assert both["total"]["abc2_clinically_applicable"] is False
    assert not both["SDH"]["abc2_clinically_applicable"] and not both["IVH"]["abc2_clinically_applicable"]
    assert both["total"]["voxel_count"] == both["IPH"]["voxel_count"] + both["SDH"]["voxel_count"]
    assert len(both["total"]["hematomas"]) == 2
    assert both["SDH"]["max_thickness_mm"] == pytest.approx(6.0, abs=0.75)
    assert [h["max_thickness_mm"] for h in both["total"]["hematomas"]] == [None, None]


def test_bad_input_raises_input_error():
    with pytest.raises(InputError):
        measure_labels(np.zeros((10, 10), np.uint8), np.eye(4))
    skewed = np.eye(4)
    skewed[:3, 1] = [0.3, 1.0, 0.0]  # in-plane axes not orthogonal
    with pytest.raises(InputError):
        measure_labels(np.ones((2, 3, 3), np.uint8), skewed)
    with pytest.raises(InputError):
        measure_labels(np.ones((2, 3, 3), np.uint8), np.diag([1.0, 1.0, 0.0, 1.0]))
