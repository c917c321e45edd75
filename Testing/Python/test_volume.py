"""CTVolume geometry: spacing, true voxel volume and tilt of sheared grids."""

import numpy as np
import pytest
from ICHAnalyzerLib.volume import CTVolume, lps_to_ras, ras_to_lps


def sheared_affine(dx: float, dy: float, plane: float, tilt_deg: float) -> np.ndarray:
    """Axial grid whose slice step leans by ``tilt_deg`` towards the row direction (gantry tilt)."""
    t = np.radians(tilt_deg)
    a = np.eye(4)
    a[:3, 0] = [dx, 0, 0]
    a[:3, 1] = [0, dy, 0]
    a[:3, 2] = [0, plane * np.tan(t), plane]
    a[:3, 3] = [-120.0, -130.0, 40.0]
    return a


@pytest.mark.parametrize("tilt", [0.0, 8.0, 24.0])
def test_true_voxel_depth_ignores_tilt(tilt):
    ct = CTVolume(np.zeros((4, 5, 6), np.int16), sheared_affine(0.5, 0.45, 5.0, tilt))
    dx, dy, dz = ct.spacing
    assert (dx, dy) == pytest.approx((0.5, 0.45))
    assert dz == pytest.approx(5.0)
    assert ct.voxel_volume_mm3 == pytest.approx(0.5 * 0.45 * 5.0)
    assert ct.tilt_deg == pytest.approx(tilt, abs=1e-9)
    # the distance between successive slice origins is larger by 1/cos(tilt)
    step = np.linalg.norm(ct.voxel_to_lps([0, 0, 1]) - ct.voxel_to_lps([0, 0, 0]))
    assert step == pytest.approx(5.0 / np.cos(np.radians(tilt)))


def test_voxel_lps_roundtrip_and_input_slices():
    ct = CTVolume(np.zeros((3, 4, 5), np.float32), sheared_affine(0.7, 0.7, 2.5, 15.0))
    pts = np.array([[1.0, 2.0, 0.5], [4.0, 0.0, 2.0]])
    assert np.allclose(ct.lps_to_voxel(ct.voxel_to_lps(pts)), pts)
    assert [s.index for s in ct.input_slices] == [0, 1, 2]
    z = [s.z_mm for s in ct.input_slices]
    assert np.allclose(np.diff(z), 2.5)
    assert np.allclose(ras_to_lps(lps_to_ras(ct.affine)), ct.affine)
