"""load_ct on the real RSNA series: true voxel size, physical positions, uneven spacing, duplicates."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import series_dir
from ICHAnalyzerLib.io import load_ct
from ICHAnalyzerLib.volume import CTVolume

_LOADED: dict[Path, CTVolume] = {}


@pytest.fixture(scope="module", autouse=True)
def _release_loaded_volumes():
    yield
    _LOADED.clear()


def loaded(folder: Path) -> CTVolume:
    """load_ct once per series and test session (reading all 17 series takes ~2 s)."""
    if folder not in _LOADED:
        _LOADED[folder] = load_ct(folder)
    return _LOADED[folder]


def raw_geometry(folder: Path) -> dict:
    """Geometry straight from the tags (pydicom), independent of ICHAnalyzerLib."""
    with warnings.catch_warnings(), pydicom.config.disable_value_validation():
        warnings.simplefilter("ignore")
        headers = {p.stem: pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob("*.dcm"))}
    first = next(iter(headers.values()))
    iop = np.array(first.ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    z = {uid: float(np.array(ds.ImagePositionPatient, float) @ normal) for uid, ds in headers.items()}
    unique_z = np.unique(np.round(sorted(z.values()), 2))
    dy, dx = (float(v) for v in first.PixelSpacing)
    return {"headers": headers, "iop": iop, "normal": normal, "z": z, "unique_z": unique_z,
            "dx": dx, "dy": dy, "steps": np.diff(unique_z)}


REGULAR = ["ID_73637515", "ID_ee4d05e4", "ID_462abff7", "ID_cd5a85fd", "ID_ce8a3cd2", "ID_9e4c2f60"]
UNEVEN = ["ID_21cbc42c", "ID_8c5a14af", "ID_d0bba180"]


@pytest.mark.parametrize("prefix", REGULAR)
def test_voxel_volume_is_pixel_area_times_plane_distance(shared_cache, prefix):
    # SimpleITK gets these wrong by +9% (ID_73637515), +4.8% (ID_ee4d05e4), -91% (ID_462abff7)
    folder = series_dir(shared_cache, prefix)
    raw = raw_geometry(folder)
    plane_distance = (raw["unique_z"][-1] - raw["unique_z"][0]) / (raw["unique_z"].size - 1)
    reference = raw["dx"] * raw["dy"] * plane_distance
    ct = loaded(folder)
    assert ct.resampling is None
    assert ct.shape[0] == raw["unique_z"].size
    # least-squares step over all slices vs end-to-end mean: equal within 0.1% (alternating 5.0/4.96 mm steps)
    assert ct.voxel_volume_mm3 == pytest.approx(reference, rel=1e-3)
    assert ct.spacing == pytest.approx((raw["dx"], raw["dy"], plane_distance), rel=1e-3)


@pytest.mark.parametrize("prefix", UNEVEN)
def test_uneven_series_resampled_onto_smallest_common_step(shared_cache, prefix):
    # SimpleITK assumes one spacing here: -17.7% (ID_21cbc42c), -16.6% (ID_8c5a14af)
    folder = series_dir(shared_cache, prefix)
    raw = raw_geometry(folder)
    ct = loaded(folder)
    assert ct.resampling is not None and "2.5" in ct.resampling
    fine_steps = raw["steps"][np.abs(raw["steps"] - raw["steps"].min()) < 0.5]
    assert ct.spacing[2] == pytest.approx(2.5, abs=0.01)
    assert (raw["steps"] > 4.9).sum() > 10 and fine_steps.size >= 1  # really mixed 2.5 / 5 mm
    # successive grid planes are exactly one plane distance apart along the normal, and cover the input
    z_planes = ct.voxel_to_lps(np.column_stack([np.zeros(ct.shape[0]), np.zeros(ct.shape[0]),
                                                np.arange(ct.shape[0])])) @ raw["normal"]
    np.testing.assert_allclose(np.diff(z_planes), ct.spacing[2], rtol=1e-6)
    extent = raw["unique_z"][-1] - raw["unique_z"][0]
    assert abs((ct.shape[0] - 1) * ct.spacing[2] - extent) <= ct.spacing[2] / 2
    assert z_planes[0] == pytest.approx(raw["unique_z"][0], abs=0.01)
    for s in ct.input_slices:
        assert s.z_mm == pytest.approx(raw["z"][s.sop_instance_uid], abs=1e-4)
        assert z_planes[0] + s.grid_k * ct.spacing[2] == pytest.approx(s.z_mm, abs=0.01)


@pytest.mark.parametrize("prefix", ["ID_21cbc42c", "ID_8c5a14af"])
def test_resampling_preserves_head_volume(shared_cache, prefix):
    """Head (HU > -300) volume: input slices as slabs halfway to their neighbours vs the resampled grid."""
    folder = series_dir(shared_cache, prefix)
    raw = raw_geometry(folder)
    ct = loaded(folder)
    z, areas = [], []
    with warnings.catch_warnings(), pydicom.config.disable_value_validation():
        warnings.simplefilter("ignore")
        for uid in sorted(raw["z"], key=raw["z"].get):
            ds = pydicom.dcmread(folder / f"{uid}.dcm")
            hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            z.append(raw["z"][uid])
            areas.append(np.count_nonzero(hu > -300) * raw["dx"] * raw["dy"])
    z = np.array(z)
    edges = np.concatenate([[z[0] - (z[1] - z[0]) / 2], (z[1:] + z[:-1]) / 2, [z[-1] + (z[-1] - z[-2]) / 2]])
    input_volume = float(np.sum(np.array(areas) * np.diff(edges)))
    output_volume = np.count_nonzero(ct.hu > -300) * ct.voxel_volume_mm3
    assert output_volume == pytest.approx(input_volume, rel=0.02)
    # the one-spacing assumption of common readers is far off on the same data
    naive = sum(areas) * np.median(np.diff(z))
    assert abs(naive / input_volume - 1) > 0.1


def test_tilted_voxels_sit_on_their_dicom_pixels(shared_cache):
    folder = series_dir(shared_cache, "ID_73637515")  # 24 deg gantry tilt
    raw = raw_geometry(folder)
    ct = loaded(folder)
    assert ct.tilt_deg == pytest.approx(24.0, abs=0.1)
    by_k = {round(s.grid_k): s for s in ct.input_slices}
    row, col = raw["iop"][:3], raw["iop"][3:]
    for k in (0, 7, 20, ct.shape[0] - 1):
        s = by_k[k]
        assert s.grid_k == pytest.approx(k, abs=0.01)
        ds = raw["headers"][s.sop_instance_uid]
        ipp = np.array(ds.ImagePositionPatient, float)
        for i, j in [(0, 0), (511, 0), (100, 300), (511, 511)]:
            expected = ipp + i * raw["dx"] * row + j * raw["dy"] * col
            np.testing.assert_allclose(ct.voxel_to_lps([i, j, k])[0], expected, atol=0.05)
        with pydicom.config.disable_value_validation():
            pixels = pydicom.dcmread(folder / f"{s.sop_instance_uid}.dcm").pixel_array
        np.testing.assert_array_equal(ct.hu[k], pixels.astype(np.int32) - 1024)


def test_duplicate_positions_set_aside_keeping_a_continuous_stack(shared_cache):
    folder = series_dir(shared_cache, "ID_462abff7")
    raw = raw_geometry(folder)
    ct = loaded(folder)
    aside = [s for s in ct.input_slices if s.set_aside]
    assert len(ct.input_slices) == len(raw["headers"]) == 36
    assert len(aside) == 8 and ct.shape[0] == 28
    warning = next(w for w in ct.warnings if "set aside" in w)
    assert all(s.sop_instance_uid in warning for s in aside)
    kept_by_z = {round(s.z_mm, 2): s.sop_instance_uid for s in ct.input_slices if not s.set_aside}
    for s in aside:  # each set-aside image has a kept twin at its position, never averaged
        twin = kept_by_z[round(s.z_mm, 2)]
        assert twin != s.sop_instance_uid
        k = round(s.grid_k)
        with pydicom.config.disable_value_validation():
            pixels = pydicom.dcmread(folder / f"{twin}.dcm").pixel_array
        np.testing.assert_array_equal(ct.hu[k], pixels.astype(np.int32) - 1024)

    # the kept images make the most continuous stack of all 2^8 possible choices (brute force)
    def image(uid: str) -> np.ndarray:
        with pydicom.config.disable_value_validation():
            pixels = pydicom.dcmread(folder / f"{uid}.dcm").pixel_array.astype(np.float32) - 1024
        return np.clip(pixels, -100, 150)

    positions = sorted({round(s.z_mm, 2) for s in ct.input_slices})
    candidates = [[s.sop_instance_uid for s in ct.input_slices if round(s.z_mm, 2) == z] for z in positions]
    duplicated = [n for n, c in enumerate(candidates) if len(c) == 2]
    last = duplicated[-1] + 1  # first unique position above the duplicated run
    assert duplicated == list(range(last))
    images = {uid: image(uid) for c in candidates[: last + 1] for uid in c}

    def difference(a: str, b: str) -> float:
        return float(np.abs(images[a] - images[b]).mean())

    def total(choice: tuple[int, ...]) -> float:
        stack = [candidates[n][c] for n, c in enumerate(choice)] + [candidates[last][0]]
        return sum(difference(a, b) for a, b in zip(stack[:-1], stack[1:], strict=True))

    kept = tuple(0 if candidates[n][0] not in {s.sop_instance_uid for s in aside} else 1 for n in duplicated)
    best = min(itertools.product((0, 1), repeat=len(duplicated)), key=total)
    assert kept == best

def test_all_real_series_load(shared_cache):
    folders = sorted(p for p in (shared_cache / "rsna").iterdir() if p.is_dir())
    folders += sorted(p for p in (shared_cache / "rsna-unlabelled").iterdir() if p.is_dir())
    assert len(folders) == 17
    for folder in folders:
        ct = _LOADED.get(folder) or load_ct(folder)
        files = sorted(folder.glob("*.dcm"))
        assert ct.series_uid == folder.name.split("_", 2)[-1]
        assert sorted(s.sop_instance_uid for s in ct.input_slices) == sorted(p.stem for p in files)
        assert ct.shape[1:] == (512, 512)
        kept_z = [s.z_mm for s in ct.input_slices if not s.set_aside]
        assert np.all(np.diff(kept_z) > 0.5)
        assert np.mean((ct.hu > -1100) & (ct.hu < -900)) > 0.1  # air around the head, in HU
        soft = ct.hu[(ct.hu > -100) & (ct.hu < 200)]
        assert 10 <= np.median(soft) <= 60  # brain and soft tissue: rescale applied


def test_written_label_map_lands_on_the_dicom_pixel(shared_cache, tmp_path):
    """A voxel labelled on the tilted series, written and read back, is at its DICOM pixel's LPS point."""
    import nibabel as nib
    import slicerio
    from ICHAnalyzerLib.io import load_labelmap, write_labelmap_nifti, write_segmentation_nrrd
    from ICHAnalyzerLib.volume import ras_to_lps

    folder = series_dir(shared_cache, "ID_73637515")
    raw = raw_geometry(folder)
    ct = loaded(folder)
    i, j, k = 300, 200, 17
    labels = np.zeros(ct.shape, np.uint8)
    labels[k, j, i] = 1
    write_labelmap_nifti(tmp_path / "l.nii.gz", labels, ct)
    write_segmentation_nrrd(tmp_path / "l.seg.nrrd", labels, ct)
    s = next(s for s in ct.input_slices if round(s.grid_k) == k)
    ds = raw["headers"][s.sop_instance_uid]
    dicom_point = (np.array(ds.ImagePositionPatient, float) + i * raw["dx"] * raw["iop"][:3]
                   + j * raw["dy"] * raw["iop"][3:])
    img = nib.load(tmp_path / "l.nii.gz")
    ijk = np.argwhere(np.asarray(img.dataobj) == 1)[0]
    np.testing.assert_allclose(ras_to_lps(img.affine)[:3] @ np.append(ijk, 1), dicom_point, atol=0.05)
    seg = slicerio.read_segmentation(str(tmp_path / "l.seg.nrrd"))
    ijk = np.argwhere(seg["voxels"] == 1)[0]
    np.testing.assert_allclose(np.asarray(seg["ijkToLPS"])[:3] @ np.append(ijk, 1), dicom_point, atol=0.05)
    np.testing.assert_array_equal(load_labelmap(tmp_path / "l.nii.gz", ct), labels)


def test_invalid_uids_are_accepted_silently(shared_cache):
    folder = series_dir(shared_cache, "ID_cd5a85fd")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning (e.g. pydicom's "Invalid value for VR UI") fails
        ct = load_ct(folder)
    assert ct.series_uid == "ID_44cfc8e964"
    assert all(s.sop_instance_uid.startswith("ID_") for s in ct.input_slices)
