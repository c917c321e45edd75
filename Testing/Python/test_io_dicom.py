"""load_ct on small synthetic DICOM series: order, tilt, uneven spacing, duplicates, series choice, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from ICHAnalyzerLib.errors import InputError
from ICHAnalyzerLib.io import load_ct
from io_factory import AXIAL, tilted_orientation, write_series, write_slice


def table_axis_positions(tilt_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Step direction along the table (superior) and its normal for a tilted acquisition."""
    o = np.array(tilted_orientation(tilt_deg))
    normal = np.cross(o[:3], o[3:])
    direction = np.array([0.0, 0.0, 1.0]) / normal[2]
    return direction, normal


def slab_volume(z: np.ndarray, areas: np.ndarray) -> float:
    """Volume from per-slice areas, each slice standing for the slab halfway to its neighbours."""
    edges = np.concatenate([[z[0] - (z[1] - z[0]) / 2], (z[1:] + z[:-1]) / 2, [z[-1] + (z[-1] - z[-2]) / 2]])
    return float(np.sum(areas * np.diff(edges)))


def test_regular_series_geometry_and_hu(tmp_path):
    paths = write_series(tmp_path / "s", np.arange(8) * 5.0, pixel_spacing=(0.8, 0.5), origin=(-4, -6, 30))
    ct = load_ct(tmp_path / "s")
    assert ct.shape == (8, 16, 16)
    assert ct.hu.dtype == np.int16
    assert set(np.unique(ct.hu)) == {-1000, 40}
    np.testing.assert_allclose(ct.affine[:3, 0], [0.5, 0, 0])  # column step: PixelSpacing[1] along the row
    np.testing.assert_allclose(ct.affine[:3, 1], [0, 0.8, 0])  # row step: PixelSpacing[0] along the column
    np.testing.assert_allclose(ct.affine[:3, 2], [0, 0, 5.0], atol=1e-9)
    np.testing.assert_allclose(ct.affine[:3, 3], [-4, -6, 30], atol=1e-9)
    assert ct.spacing == pytest.approx((0.5, 0.8, 5.0))
    assert ct.resampling is None and ct.warnings == []
    assert ct.series_uid == "ID_series1"
    assert ct.source == str(tmp_path / "s")
    assert [s.sop_instance_uid for s in ct.input_slices] == [p.stem for p in paths]
    assert [s.grid_k for s in ct.input_slices] == pytest.approx(range(8))


def test_slices_ordered_by_position_not_by_name(tmp_path):
    z = np.array([20.0, 0.0, 35.0, 5.0, 30.0, 10.0, 25.0, 15.0])  # file names in a shuffled spatial order

    def ramp(points: np.ndarray) -> np.ndarray:  # HU grows with height; air on the left edge
        return np.where(points[..., 0] < -6, -1000.0, 10.0 * points[..., 2])

    paths = write_series(tmp_path / "s", z, hu=ramp)
    ct = load_ct(tmp_path / "s")
    np.testing.assert_array_equal(ct.hu[:, 8, 8], 10 * np.sort(z))
    assert [s.z_mm for s in ct.input_slices] == pytest.approx(np.sort(z))
    by_uid = {s.sop_instance_uid: s for s in ct.input_slices}
    for path, zz in zip(paths, z, strict=False):
        assert by_uid[path.stem].grid_k == pytest.approx(zz / 5.0)


def test_tilted_series_is_sheared_with_true_plane_distance(tmp_path):
    tilt = 20.0
    direction, normal = table_axis_positions(tilt)
    paths = write_series(tmp_path / "s", np.arange(6) * 5.0, orientation=tilted_orientation(tilt),
                         step_direction=direction, pixel_spacing=(0.7, 0.6))
    ct = load_ct(tmp_path / "s")
    assert ct.tilt_deg == pytest.approx(tilt, abs=1e-3)
    assert ct.spacing[2] == pytest.approx(5.0, abs=1e-4)
    assert ct.voxel_volume_mm3 == pytest.approx(0.6 * 0.7 * 5.0, rel=1e-5)
    assert np.linalg.norm(ct.affine[:3, 2]) == pytest.approx(5.0 / np.cos(np.radians(tilt)), rel=1e-5)
    assert any("tilt" in w for w in ct.warnings)
    # every voxel sits where its DICOM pixel sits
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        ipp = np.array(ds.ImagePositionPatient, float)
        iop = np.array(ds.ImageOrientationPatient, float)
        row, col = iop[:3], iop[3:]
        for i, j in [(0, 0), (15, 0), (3, 11), (15, 15)]:
            expected = ipp + i * 0.6 * row + j * 0.7 * col
            np.testing.assert_allclose(ct.voxel_to_lps([i, j, k])[0], expected, atol=1e-4)


@pytest.mark.parametrize("tilt", [0.0, 22.0])
def test_uneven_spacing_resampled_keeps_object_volume(tmp_path, tilt):
    # 2.5 mm run, one 0.98 mm step, then a 5 mm run (like ID_21cbc42c)
    z = np.concatenate([np.arange(16) * 2.5, 37.5 + 0.98 + np.arange(12) * 5.0])
    direction, _ = table_axis_positions(tilt)
    orientation = tilted_orientation(tilt)
    row, col = np.array(orientation[:3]), np.array(orientation[3:])
    origin = -(32 * 2.0 * row + 32 * 2.0 * col)  # image centre of slice z=0 at the LPS origin
    centre, radius = (z[0] + z[-1]) / 2 * direction, 30.0

    def sphere(points: np.ndarray) -> np.ndarray:
        return np.where(np.linalg.norm(points - centre, axis=-1) < radius, 40.0, -1000.0)

    write_series(tmp_path / "s", z, size=64, pixel_spacing=(2.0, 2.0), orientation=orientation,
                 step_direction=direction, origin=origin, hu=sphere)
    ct = load_ct(tmp_path / "s")
    assert ct.resampling is not None and "2.5" in ct.resampling
    assert ct.resampling in ct.warnings
    assert ct.spacing[2] == pytest.approx(2.5, abs=1e-3)
    assert ct.tilt_deg == pytest.approx(tilt, abs=1e-3)
    assert ct.shape[0] == round((z[-1] - z[0]) / 2.5) + 1  # same extent
    assert ct.hu.dtype == np.float32
    ks = np.array([s.grid_k for s in ct.input_slices])
    np.testing.assert_allclose(ks, (z - z[0]) / ct.spacing[2], atol=1e-3)
    # input slices on the grid (the 2.5 mm run) are kept as they are
    np.testing.assert_array_equal(ct.hu[5], np.where(ct.hu[5] > -480, 40, -1000))

    true_volume = 4 / 3 * np.pi * radius**3
    areas = np.array([np.count_nonzero(sphere(_slice_points(ct, zz, direction, origin)) > -480) * 4.0
                      for zz in z])
    input_volume = slab_volume(z, areas)
    output_volume = np.count_nonzero(ct.hu > -480) * ct.voxel_volume_mm3
    assert input_volume == pytest.approx(true_volume, rel=0.03)
    assert output_volume == pytest.approx(true_volume, rel=0.03)
    assert output_volume == pytest.approx(input_volume, rel=0.03)
    # one voxel per input slice lands on the same physical point as the input pixel
    for s, zz in zip(ct.input_slices, z, strict=False):
        lps = ct.voxel_to_lps([10, 20, s.grid_k])[0]
        np.testing.assert_allclose(lps, origin + zz * direction + 10 * 2.0 * row + 20 * 2.0 * col, atol=1e-3)


def _slice_points(ct, z, direction, origin):
    """LPS points of the 64x64 input pixels of the slice at ``z``."""
    row, col = ct.affine[:3, 0] / 2.0, ct.affine[:3, 1] / 2.0
    jj, ii = np.mgrid[0:64, 0:64]
    return origin + z * direction + ii[..., None] * 2.0 * row + jj[..., None] * 2.0 * col


def test_duplicate_positions_keep_the_continuous_image(tmp_path):
    z = np.arange(10) * 5.0

    def disc(radius: float):
        def hu(points: np.ndarray) -> np.ndarray:
            return np.where(np.hypot(points[..., 0], points[..., 1]) < radius, 40.0, -1000.0)
        return hu

    folder = tmp_path / "s"
    for m, zz in enumerate(z):  # a head-like stack: the disc grows smoothly with height
        write_series(folder, [zz], hu=disc(2.0 + 0.5 * m), prefix=f"ID_b{m:02d}_")
    # a repeated acquisition at 10 and 15 mm shows something else; its UIDs sort first
    dup = [write_series(folder, [zz], hu=disc(7.5), prefix=f"ID_a{m:02d}_")[0]
           for m, zz in ((2, 10.0), (3, 15.0))]
    ct = load_ct(folder)
    assert ct.shape[0] == 10
    aside = [s for s in ct.input_slices if s.set_aside]
    assert sorted(s.sop_instance_uid for s in aside) == sorted(p.stem for p in dup)
    assert [s.grid_k for s in aside] == pytest.approx([2.0, 3.0])
    assert len(ct.input_slices) == 12
    warning = next(w for w in ct.warnings if "set aside" in w)
    assert all(p.stem in warning for p in dup)
    for m in range(10):  # kept images, unchanged (never averaged)
        radius = np.hypot(*np.meshgrid(np.arange(16) - 8.0, np.arange(16) - 8.0))
        expected = np.where(radius < 2.0 + 0.5 * m, 40, -1000)
        np.testing.assert_array_equal(ct.hu[m], expected)


def test_chooses_axial_ct_series_with_most_slices(tmp_path):
    write_series(tmp_path / "a", np.arange(6) * 5.0, series_uid="ID_small")
    write_series(tmp_path / "deep" / "b", np.arange(9) * 5.0, series_uid="ID_large")
    sagittal = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    write_series(tmp_path / "loc", np.arange(12) * 2.0, orientation=sagittal, series_uid="ID_sagittal")
    ct = load_ct(tmp_path)
    assert ct.series_uid == "ID_large" and ct.shape[0] == 9
    note = ct.warnings[0]
    assert "ID_large" in note and "ID_small" in note and "ID_sagittal" in note
    other = load_ct(tmp_path, series_uid="ID_small")
    assert other.series_uid == "ID_small" and other.shape[0] == 6
    with pytest.raises(InputError, match="ID_small") as err:
        load_ct(tmp_path, series_uid="ID_nope")
    assert "ID_large" in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------------- errors


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "does-not-exist"


def _no_images(tmp_path: Path) -> Path:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("not an image")
    return tmp_path / "d"


def _mr(tmp_path: Path) -> Path:
    write_series(tmp_path / "d", np.arange(5) * 5.0, modality="MR")
    return tmp_path / "d"


def _single_image_folder(tmp_path: Path) -> Path:
    write_series(tmp_path / "d", [0.0])
    return tmp_path / "d"


def _single_image_file(tmp_path: Path) -> Path:
    return write_series(tmp_path / "d", [0.0])[0]


def _sagittal(tmp_path: Path) -> Path:
    write_series(tmp_path / "d", np.arange(5) * 5.0, orientation=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    return tmp_path / "d"


def _garbage_file(tmp_path: Path) -> Path:
    (tmp_path / "ID_x.dcm").write_bytes(b"\x00\x01garbage" * 50)
    return tmp_path / "ID_x.dcm"


def _gap(tmp_path: Path) -> Path:
    write_series(tmp_path / "d", [0.0, 5.0, 10.0, 15.0, 25.0, 30.0, 35.0])
    return tmp_path / "d"


def _orientation(tmp_path: Path) -> Path:
    write_series(tmp_path / "d", np.arange(5) * 5.0)
    write_series(tmp_path / "d", [25.0], orientation=tilted_orientation(15.0), prefix="ID_z")
    return tmp_path / "d"


def _not_collinear(tmp_path: Path) -> Path:
    write_series(tmp_path / "d", np.arange(5) * 5.0)
    write_slice(tmp_path / "d" / "ID_z.dcm", np.full((16, 16), 1064), (-5.0, -8.0, 25.0), AXIAL)
    return tmp_path / "d"


def _truncated(tmp_path: Path) -> Path:
    paths = write_series(tmp_path / "d", np.arange(5) * 5.0)
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) - 200])
    return tmp_path / "d"


def _garbage(tmp_path: Path) -> Path:
    write_series(tmp_path / "d", np.arange(5) * 5.0)
    (tmp_path / "d" / "ID_broken.dcm").write_bytes(b"\x00\x01garbage" * 50)
    return tmp_path / "d"


def _not_hounsfield(tmp_path: Path) -> Path:  # raw stored values, no RescaleIntercept: no air at all
    write_series(tmp_path / "d", np.arange(5) * 5.0, intercept=0.0,
                 hu=lambda p: np.where(p[..., 0] < 0, 24.0, 1064.0))
    return tmp_path / "d"


def _absurd_scale(tmp_path: Path) -> Path:  # a RescaleSlope that makes no sense for CT: up to 100000 "HU"
    stored = np.where(np.arange(16)[:, None] < 8, 24, 1064) * np.ones((16, 16), int)
    (tmp_path / "d").mkdir()
    for m in range(5):
        write_slice(tmp_path / "d" / f"ID_{m}.dcm", stored, (-8.0, -8.0, 5.0 * m), slope=100.0)
    return tmp_path / "d"


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (_missing, "not found"),
        (_no_images, "No DICOM image"),
        (_mr, "MR, not CT"),
        (_single_image_folder, "single 2D image"),
        (_single_image_file, "single 2D DICOM image"),
        (_gap, "Missing slice"),
        (_orientation, "Inconsistent ImageOrientationPatient"),
        (_not_collinear, "not on one line"),
        (_truncated, "Corrupt DICOM"),
        (_garbage, "Corrupt DICOM"),
        (_garbage_file, "Corrupt DICOM"),
        (_sagittal, "not axial"),
        (_not_hounsfield, "not Hounsfield"),
        (_absurd_scale, "not Hounsfield"),
    ],
)
def test_input_errors_are_one_line(tmp_path, make, pattern):
    path = make(tmp_path)
    with pytest.raises(InputError, match=pattern) as err:
        load_ct(path)
    message = str(err.value)
    assert "\n" not in message and 0 < len(message) < 400
