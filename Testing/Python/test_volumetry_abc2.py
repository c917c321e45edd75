"""ABC/2 and thickness against values worked out by hand from the shapes' geometry.

Every expected A, B, C (and slice count) below comes from the closed-form geometry of the shape and the
plane positions of the grid, never from the implementation. Each case first asserts that it is
unambiguous (no slice near a 25 % / 75 % threshold, a clearly largest slice), so a change of parameters
cannot make a test pass or fail by luck.
"""

import math

import numpy as np
import pytest
from ICHAnalyzerLib.volumetry import measure_labels
from volumetry_shapes import (
    circle_lens_area,
    ellipsoid,
    grid_affine,
    shell_sector,
    sphere,
    sphere_lens_volume,
)


def lps_to_index(affine, lps):
    return (np.asarray(lps, float) - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T


def hand_slice_weights(ratios, present):
    """Kothari weights of slices from their area relative to the largest, with the unambiguity check."""
    ratios = np.asarray(ratios)[present]
    assert np.all(np.abs(ratios - 0.25) > 0.04) and np.all(np.abs(ratios - 0.75) > 0.04), ratios
    full = int(np.count_nonzero(ratios >= 0.75))
    half = int(np.count_nonzero((ratios >= 0.25) & (ratios < 0.75)))
    return full, half, int(np.count_nonzero(present))


def check_abc(abc, entry, expected, tol_mm):
    """Compare the ABC/2 block of an entry with hand values (A, B in mm; slices; plane distance)."""
    a_exp, b_exp, k_exp, (full, half, counted), dz = expected
    assert abc["slice_index"] in np.atleast_1d(k_exp)
    assert (abc["slices_full"], abc["slices_half"], abc["slices_counted_unweighted"]) == (full, half, counted)
    assert abc["C_mm"] == pytest.approx((full + half / 2) * dz)
    assert abc["C_unweighted_mm"] == pytest.approx(counted * dz)
    assert abc["A_mm"] == pytest.approx(a_exp, abs=tol_mm)
    assert abc["B_mm"] == pytest.approx(b_exp, abs=tol_mm)
    rel = tol_mm / a_exp + tol_mm / b_exp
    assert entry["abc2_ml"] == pytest.approx(a_exp * b_exp * (full + half / 2) * dz / 2000, rel=rel)
    assert entry["abc2_unweighted_ml"] == pytest.approx(a_exp * b_exp * counted * dz / 2000, rel=rel)
    # internal consistency of the reported numbers
    assert entry["abc2_ml"] == pytest.approx(abc["A_mm"] * abc["B_mm"] * abc["C_mm"] / 2000, rel=2e-3)
    assert entry["abc2_difference_pct"] == pytest.approx(
        (entry["abc2_ml"] - entry["volume_ml"]) / entry["volume_ml"] * 100, abs=0.02)


# dx, dy, plane distance, tilt, yaw of the grid; semi-axes a, b (in-plane), c (along z); in-plane angle of a;
# where the centre lies between two planes (fraction of the plane distance), chosen so the case is unambiguous
ELLIPSOIDS = [
    (0.5, 0.5, 5.0, 0.0, 0.0, (20.0, 12.0, 26.0), 30.0, 0.5),
    (0.45, 0.45, 2.5, 0.0, 15.0, (12.0, 7.0, 13.0), 100.0, 0.5),
    (0.5, 0.8, 5.0, 20.0, 0.0, (18.0, 10.0, 25.0), 60.0, 0.1),
    (0.7, 0.7, 3.0, 20.0, 30.0, (14.0, 8.0, 12.0), 0.0, 0.3),
    (0.5, 0.5, 5.0, 20.0, 10.0, (30.0, 20.0, 20.0), 135.0, 0.25),
    (1.0, 1.0, 1.0, 20.0, 0.0, (9.0, 9.0, 5.5), 0.0, 0.5),
]


@pytest.mark.parametrize("dx, dy, dz, tilt, yaw, axes, angle, between", ELLIPSOIDS)
def test_ellipsoid_volume_and_abc2_by_hand(dx, dy, dz, tilt, yaw, axes, angle, between):
    a, b, c = axes
    half_extent = max(a, b) + c * math.tan(math.radians(tilt)) + 3 * max(dx, dy)
    ni, nj, nk = math.ceil(2 * half_extent / dx), math.ceil(2 * half_extent / dy), math.ceil(2 * c / dz) + 3
    affine = grid_affine(dx, dy, dz, tilt_deg=tilt, yaw_deg=yaw, origin=(-80.0, -60.0, 20.0))
    kc = (nk - 1) / 2 + between
    centre = affine[:3, :3] @ [ni / 2 + 0.3, nj / 2 + 0.17, kc] + affine[:3, 3]
    labels = ellipsoid((nk, nj, ni), affine, centre, axes, angle).astype(np.uint8)
    iph = measure_labels(labels, affine)["IPH"]

    # volume: exact count x true voxel size, and close to 4/3 pi abc
    voxel_mm3 = dx * dy * dz
    assert iph["volume_ml"] == pytest.approx(int(labels.sum()) * voxel_mm3 / 1000, abs=1e-4)
    z = (np.arange(nk) - kc) * dz  # signed distance of each slice plane from the centre
    s = 1 - (z / c) ** 2  # cross-section area / equatorial area
    present = s > 0
    assert np.all(s[present] * math.pi * a * b >= 20 * dx * dy) and np.all(s[~present] < -0.01)
    v_true = 4 / 3 * math.pi * a * b * c
    v_slices = float(np.sum(math.pi * a * b * s[present]) * dz)  # what 5 mm sampling along z can give
    assert iph["volume_ml"] * 1000 == pytest.approx(v_slices, rel=0.015)
    assert iph["volume_ml"] * 1000 == pytest.approx(v_true, rel=abs(v_slices - v_true) / v_true + 0.015)

    k_star = int(np.argmax(s))
    ratios = s / s[k_star]
    assert np.sort(ratios)[-2] < 0.985  # pixel-count noise of the areas is well below 1.5 %
    weights = hand_slice_weights(ratios, present)
    tol = 1.5 * max(dx, dy)
    abc = iph["abc2"]
    a_exp, b_exp = 2 * a * math.sqrt(s[k_star]), 2 * b * math.sqrt(s[k_star])
    check_abc(abc, iph, (a_exp, b_exp, k_star, weights, dz), tol)

    # end points: on slice k*, inside the mask, A along the major axis when the ellipse is elongated
    a_vec = np.subtract(*abc["A_endpoints"])
    b_vec = np.subtract(*abc["B_endpoints"])
    assert abs(a_vec @ b_vec) / (np.linalg.norm(a_vec) * np.linalg.norm(b_vec)) < 0.01
    for name in ("A_endpoints", "B_endpoints"):
        for point in abc[name]:
            i, j, k = lps_to_index(affine, point)
            assert k == pytest.approx(k_star, abs=1e-3)
            assert labels[k_star, int(round(j)), int(round(i))] == 1, (name, i, j)
    if a / b >= 1.4:
        major = np.array([math.cos(math.radians(angle)), math.sin(math.radians(angle)), 0.0])
        assert abs(a_vec @ major) / np.linalg.norm(a_vec) > math.cos(math.radians(5))


def test_length_convention_is_unbiased_on_rasterized_ellipses():
    """A quarter pixel per end: the mean error of A and B over random ellipses is within 0.25 pixel
    (centre-to-centre would be ~0.5 pixel short, edge-to-edge ~0.5 pixel long)."""
    rng = np.random.default_rng(7)
    px = 0.5
    affine = grid_affine(px, px, 5.0)
    errors_a, errors_b = [], []
    for _ in range(40):
        a = rng.uniform(3, 20)
        b = rng.uniform(2, a)
        n = math.ceil(2 * a / px) + 6
        centre = np.array([n * px / 2 + rng.uniform(0, px), n * px / 2 + rng.uniform(0, px), 0.0])
        mask = ellipsoid((1, n, n), affine, centre, (a, b, 1.0), rng.uniform(0, 180))
        abc = measure_labels(mask.astype(np.uint8), affine)["IPH"]["abc2"]
        errors_a.append((abc["A_mm"] - 2 * a) / px)
        errors_b.append((abc["B_mm"] - 2 * b) / px)
    for errors in (np.array(errors_a), np.array(errors_b)):
        assert abs(errors.mean()) < 0.25, errors.mean()
        assert np.all(np.abs(errors) < 2.5)


def test_two_lobes_by_hand():
    """Two overlapping spheres (12 and 9 mm, centres 16 mm apart in-plane and 10 mm in z). On the largest
    slice A runs along the line of centres across both discs, B is the larger disc's diameter; the
    second lobe adds slices to C. Expected error worked out from the exact union volume."""
    px, dz = 0.5, 5.0
    affine = grid_affine(px, px, dz)
    shape = (14, 100, 140)
    r1, r2, d_xy, d_z = 12.0, 9.0, 16.0, 10.0
    c1 = np.array([25.0, 25.0, 21.5])
    c2 = c1 + [d_xy, 0.0, d_z]
    labels = (sphere(shape, affine, c1, r1) | sphere(shape, affine, c2, r2)).astype(np.uint8)
    iph = measure_labels(labels, affine)["IPH"]
    assert len(iph["hematomas"]) == 1

    z = np.arange(shape[0]) * dz
    rho1 = np.sqrt(np.clip(r1**2 - (z - c1[2]) ** 2, 0, None))
    rho2 = np.sqrt(np.clip(r2**2 - (z - c2[2]) ** 2, 0, None))
    area = np.array([math.pi * (p**2 + q**2) - circle_lens_area(p, q, d_xy)
                     for p, q in zip(rho1, rho2, strict=True)])
    present = area > 0
    assert np.all(area[present] >= 20 * px * px)  # no slice merely grazes a sphere
    assert np.all((np.abs(z - c1[2]) > r1 + 0.05) & (np.abs(z - c2[2]) > r2 + 0.05) | present)
    k_star = int(np.argmax(area))
    assert np.sort(area / area[k_star])[-2] < 0.985
    assert rho1[k_star] > 0 and rho2[k_star] > 0 and d_xy > abs(rho1[k_star] - rho2[k_star])
    a_exp = rho1[k_star] + d_xy + rho2[k_star]
    b_exp = 2 * max(rho1[k_star], rho2[k_star])
    weights = hand_slice_weights(area / area[k_star], present)
    check_abc(iph["abc2"], iph, (a_exp, b_exp, k_star, weights, dz), 1.5 * px)

    v_true = 4 / 3 * math.pi * (r1**3 + r2**3) - sphere_lens_volume(r1, r2, math.hypot(d_xy, d_z))
    full, half, counted = weights
    predicted_weighted = a_exp * b_exp * (full + half / 2) * dz / 2 / v_true - 1
    predicted_unweighted = a_exp * b_exp * counted * dz / 2 / v_true - 1
    # the voxel volume misses at most a few % of the true union at 5 mm slices
    assert iph["volume_ml"] * 1000 == pytest.approx(v_true, rel=0.05)
    measured_weighted = iph["abc2_ml"] * 1000 / v_true - 1
    measured_unweighted = iph["abc2_unweighted_ml"] * 1000 / v_true - 1
    assert measured_weighted == pytest.approx(predicted_weighted, abs=0.06)
    assert measured_unweighted == pytest.approx(predicted_unweighted, abs=0.08)
    assert predicted_weighted < -0.2 and predicted_unweighted > 0.25  # ABC/2 errs widely on this shape


@pytest.mark.parametrize("tilt", [0.0, 20.0])
def test_crescent_by_hand(tilt):
    """SDH-like crescent: cylindrical shell between radii 58 and 70 mm, +-50 deg, 35 mm high (7 slices).
    A = outer tip to outer tip = 2 R sin 50; B = longest chord perpendicular to A, at the inner corners:
    sqrt(R^2 - r^2 sin^2 50) - r cos 50; every slice has the same area (7 full). ABC/2 = A B C / 2
    underestimates the true volume (50 deg in rad x (R^2 - r^2) x 35) by a third."""
    px, dz, r_in, r_out, half_angle = 0.5, 5.0, 58.0, 70.0, 50.0
    affine = grid_affine(px, px, dz, tilt_deg=tilt, origin=(-60.0, 10.0, 0.0))
    shape = (9, 140, 240)
    labels = shell_sector(shape, affine, (0.0, 0.0), r_in, r_out, half_angle, (2.5, 37.5)).astype(np.uint8)
    sdh_labels = labels * 4
    sdh = measure_labels(sdh_labels, affine)["SDH"]
    assert sdh["abc2_clinically_applicable"] is False

    t = math.radians(half_angle)
    a_exp = 2 * r_out * math.sin(t)
    b_exp = math.sqrt(r_out**2 - (r_in * math.sin(t)) ** 2) - r_in * math.cos(t)
    # all 7 slices (1..7) have the same shape: any of them may be the largest by a few pixels
    check_abc(sdh["abc2"], sdh, (a_exp, b_exp, range(1, 8), (7, 0, 7), dz), 1.5 * px)
    v_true = t * (r_out**2 - r_in**2) * 35.0
    assert sdh["volume_ml"] * 1000 == pytest.approx(v_true, rel=0.01)
    predicted = a_exp * b_exp * 35.0 / 2 / v_true - 1
    assert predicted < -0.3
    assert sdh["abc2_difference_pct"] / 100 == pytest.approx(predicted, abs=0.03)

    # max thickness: the shell's 12 mm, measured radially; both end points within the shell
    assert sdh["max_thickness_mm"] == pytest.approx(r_out - r_in, abs=1.5 * px)
    ends = np.array(sdh["thickness_endpoints"])
    radii = np.hypot(ends[:, 0], ends[:, 1])
    assert np.all((radii > r_in - px) & (radii < r_out + px))
    mid = ends.mean(axis=0)
    direction = (ends[1] - ends[0]) / np.linalg.norm(ends[1] - ends[0])
    radial = np.array([mid[0], mid[1], 0.0]) / math.hypot(mid[0], mid[1])
    assert abs(direction @ radial) > math.cos(math.radians(8))
    assert ends[0][2] == ends[1][2]  # in-plane


def test_thickness_of_a_slab():
    """A slab n pixels thick: 2 x (max distance to the nearest outside pixel centre - 1/4 pixel)
    = (n + 1/2) pixels for odd n, (n - 1/2) pixels for even n (the quarter-pixel convention)."""
    px = 0.5
    affine = grid_affine(px, px, 5.0)
    for n, expected_px in ((9, 9.5), (10, 9.5), (24, 23.5)):
        labels = np.zeros((3, 80, 60), np.uint8)
        labels[1, 10:70, 20:20 + n] = 5
        edh = measure_labels(labels, affine)["EDH"]
        assert edh["max_thickness_mm"] == pytest.approx(expected_px * px)
        ends = np.array(edh["thickness_endpoints"])
        assert abs(ends[0][1] - ends[1][1]) < 1e-6  # measured across the slab (along x)


def test_kothari_weights_at_the_thresholds_and_slice_gaps():
    """Slices of 100, 75, 74, 25 and 24 pixels (one corner shared: one hematoma): >= 75 % counts 1,
    25-75 % counts 1/2, < 25 % counts 0. A second blob two slices higher (10 pixels, after an empty
    slice) adds one slice to the label's unweighted count, none to the weighted one."""
    labels = np.zeros((8, 50, 50), np.uint8)
    for k, (rows, cols) in enumerate([(4, 6), (5, 5), (2, 37), (5, 15), (10, 10)]):
        labels[k, :rows, :cols] = 1
    labels[6, 40:42, 40:45] = 1
    iph = measure_labels(labels, grid_affine(0.5, 0.5, 5.0, tilt_deg=20.0))["IPH"]
    assert [h["voxel_count"] for h in iph["hematomas"]] == [298, 10]
    first = iph["hematomas"][0]["abc2"]
    assert first["slice_index"] == 4
    assert (first["slices_full"], first["slices_half"], first["slices_counted_unweighted"]) == (2, 2, 5)
    assert first["C_mm"] == pytest.approx(15.0) and first["C_unweighted_mm"] == pytest.approx(25.0)
    label_level = iph["abc2"]
    assert (label_level["slices_full"], label_level["slices_half"]) == (2, 2)
    assert label_level["slices_counted_unweighted"] == 6
