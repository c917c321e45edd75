"""Synthetic hemorrhage insertion: requested label, stated volume = voxel count x true voxel volume."""

from __future__ import annotations

import numpy as np
import pytest
from ICHAnalyzerLib.synthesis import insert_hemorrhage, synthesize_case
from ICHAnalyzerLib.volume import CTVolume


def head(tilt_deg: float = 0.0, nk: int = 24, n: int = 128, dx: float = 1.6, dz: float = 5.0):
    """Ellipsoidal head: skull (1000 HU), brain (32 HU + noise) with a central ventricle (8 HU) and sulci."""
    rng = np.random.default_rng(0)
    kk, jj, ii = np.mgrid[:nk, :n, :n].astype(float)
    z = (kk - nk / 2) * dz
    y = (jj - n / 2) * dx
    x = (ii - n / 2) * dx
    r_out = np.sqrt((x / 80) ** 2 + (y / 95) ** 2 + (z / 70) ** 2)
    r_in = np.sqrt((x / 72) ** 2 + (y / 87) ** 2 + (z / 62) ** 2)
    hu = np.full((nk, n, n), -1000.0)
    hu[r_out < 1] = 1000.0
    brain = r_in < 1
    hu[brain] = 32.0
    sulci = brain & (r_in > 0.9) & (np.sin(np.arctan2(y, x) * 24) > 0.6)
    hu[sulci] = 6.0
    ventricle = (np.sqrt((x / 12) ** 2 + (y / 30) ** 2 + (z / 20) ** 2) < 1)
    hu[ventricle] = 8.0
    hu += rng.normal(0, 4, hu.shape)
    t = np.radians(tilt_deg)
    affine = np.array([[dx, 0, 0, -100], [0, dx, dz * np.sin(t), -100], [0, 0, dz * np.cos(t), -60],
                       [0, 0, 0, 1]])
    return CTVolume(hu=hu.astype(np.int16), affine=affine), brain


@pytest.mark.parametrize("tilt", [0.0, 20.0])
def test_iph_volume_as_stated_and_requested(tilt):
    ct, brain = head(tilt)
    new, labels, lesion = insert_hemorrhage(ct, brain, 1, np.random.default_rng(3), volume_ml=12.0)
    assert lesion.label == 1 and lesion.key == "IPH"
    count = int((labels == 1).sum())
    assert count == lesion.voxel_count > 0
    assert lesion.volume_ml == pytest.approx(count * ct.voxel_volume_mm3 / 1000.0)
    assert lesion.volume_ml == pytest.approx(12.0, rel=0.2)
    assert set(np.unique(labels)) == {0, 1}
    assert not labels[~brain].any()
    inside = new.hu[labels == 1].astype(float)
    assert 45 <= inside.mean() <= 95
    # the host outside the lesion and its oedema rim is untouched
    far = ~brain
    assert np.array_equal(new.hu[far], ct.hu[far])
    assert new.shape == ct.shape and np.allclose(new.affine, ct.affine)


@pytest.mark.parametrize("label", [2, 3, 4, 5])
def test_each_subtype_inserts_its_label_inside_the_brain(label):
    ct, brain = head()
    new, labels, lesion = insert_hemorrhage(ct, brain, label, np.random.default_rng(label))
    assert lesion.label == label
    assert set(np.unique(labels)) == {0, label}
    assert (labels == label).sum() * ct.voxel_volume_mm3 / 1000.0 == pytest.approx(lesion.volume_ml)
    assert lesion.volume_ml > 0.05
    assert not labels[~brain].any()
    assert new.hu[labels == label].mean() > ct.hu[labels == label].mean() + 20  # denser than the host


def test_extra_axial_lesions_touch_the_inner_table():
    ct, brain = head()
    from scipy import ndimage

    rim = brain & ~ndimage.binary_erosion(brain, structure=np.ones((1, 3, 3)), iterations=2)
    for label in (4, 5):
        _, labels, _ = insert_hemorrhage(ct, brain, label, np.random.default_rng(7))
        assert (labels == label)[rim].any()


def test_synthesize_case_is_deterministic_and_volumes_restated():
    ct, brain = head()
    a = synthesize_case(ct, brain, np.random.default_rng(11), subtypes=[1, 4])
    b = synthesize_case(ct, brain, np.random.default_rng(11), subtypes=[1, 4])
    assert np.array_equal(a[0].hu, b[0].hu) and np.array_equal(a[1], b[1])
    for lesion in a[2]:
        assert lesion.voxel_count == int((a[1] == lesion.label).sum())


def test_unknown_label_is_refused():
    ct, brain = head()
    with pytest.raises(ValueError):
        insert_hemorrhage(ct, brain, 9, np.random.default_rng(0))
