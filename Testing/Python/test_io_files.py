"""NIfTI / NRRD / .seg.nrrd reading and writing: exact sheared geometry, axis handling, label maps, errors."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
import slicerio
from ICHAnalyzerLib.constants import HEMORRHAGE_CATEGORY, HEMORRHAGE_TYPE, SUBTYPE_BY_LABEL
from ICHAnalyzerLib.errors import InputError, OutputError
from ICHAnalyzerLib.io import load_ct, load_labelmap, write_ct, write_labelmap_nifti, write_segmentation_nrrd
from ICHAnalyzerLib.volume import CTVolume, ras_to_lps


def sheared_ct(tilt_deg: float = 22.0, shape: tuple[int, int, int] = (7, 12, 10)) -> CTVolume:
    """A small tilted CT: air with a block of tissue and a gradient so every voxel is distinct enough."""
    t = np.radians(tilt_deg)
    affine = np.eye(4)
    affine[:3, 0] = [0.48828125, 0.0, 0.0]
    affine[:3, 1] = [0.0, 0.47 * np.cos(t), -0.47 * np.sin(t)]  # tilted column direction, like the real files
    affine[:3, 2] = [0.0, 0.0, 5.0 / np.cos(t)]  # step along the table axis
    affine[:3, 3] = [-125.0, -114.297981, 19.179382]
    rng = np.random.default_rng(0)
    hu = np.full(shape, -1000, np.int16)
    hu[1:-1, 2:-2, 2:-2] = rng.integers(-20, 90, size=(shape[0] - 2, shape[1] - 4, shape[2] - 4))
    return CTVolume(hu=hu, affine=affine, source="synthetic")


def labels_for(ct: CTVolume) -> np.ndarray:
    labels = np.zeros(ct.shape, np.uint8)
    labels[2, 3:6, 3:5] = 1
    labels[3, 4, 4] = 3
    labels[4:6, 6:9, 5:8] = 4
    return labels


@pytest.mark.parametrize("name", ["ct.nii.gz", "ct.nii", "ct.nrrd"])
@pytest.mark.parametrize("tilt", [0.0, 22.0])
def test_ct_round_trip_keeps_sheared_affine(tmp_path, name, tilt):
    ct = sheared_ct(tilt)
    write_ct(tmp_path / name, ct)
    back = load_ct(tmp_path / name)
    np.testing.assert_array_equal(back.hu, ct.hu)
    assert back.hu.dtype == np.int16
    # NRRD stores text doubles; NIfTI-1 stores the sform as float32 (< 1e-5 mm here)
    atol = 1e-12 if name.endswith(".nrrd") else 2e-5
    np.testing.assert_allclose(back.affine, ct.affine, atol=atol, rtol=0)
    assert back.voxel_volume_mm3 == pytest.approx(ct.voxel_volume_mm3, rel=1e-6)
    assert back.tilt_deg == pytest.approx(tilt, abs=1e-4)
    assert list(tmp_path.iterdir()) == [tmp_path / name]  # no temporary file left behind


@pytest.mark.parametrize("tilt", [0.0, 22.0])
def test_nifti_sform_exact_and_qform_only_without_shear(tmp_path, tilt):
    ct = sheared_ct(tilt)
    write_labelmap_nifti(tmp_path / "l.nii.gz", labels_for(ct), ct)
    img = nib.load(tmp_path / "l.nii.gz")
    assert img.get_data_dtype() == np.uint8
    assert int(img.header["sform_code"]) == 1
    np.testing.assert_allclose(ras_to_lps(img.get_sform()), ct.affine, atol=2e-5)
    if tilt == 0.0:
        assert int(img.header["qform_code"]) == 1
        np.testing.assert_allclose(ras_to_lps(img.get_qform()), ct.affine, atol=2e-5)
    else:
        assert int(img.header["qform_code"]) == 0


def test_labelmap_round_trip_maps_voxels_to_same_lps_points(tmp_path):
    ct = sheared_ct(22.0)
    labels = labels_for(ct)
    write_labelmap_nifti(tmp_path / "l.nii.gz", labels, ct)
    write_segmentation_nrrd(tmp_path / "l.seg.nrrd", labels, ct)
    np.testing.assert_array_equal(load_labelmap(tmp_path / "l.nii.gz", ct), labels)
    np.testing.assert_array_equal(load_labelmap(tmp_path / "l.seg.nrrd", ct), labels)

    k, j, i = 3, 4, 4  # the single SAH voxel
    expected = ct.voxel_to_lps([i, j, k])[0]
    img = nib.load(tmp_path / "l.nii.gz")
    ijk = np.argwhere(np.asarray(img.dataobj) == 3)[0]  # nibabel array is [i, j, k]
    np.testing.assert_allclose(ras_to_lps(img.affine)[:3] @ np.append(ijk, 1), expected, atol=1e-4)
    seg = slicerio.read_segmentation(str(tmp_path / "l.seg.nrrd"))
    ijk = np.argwhere(seg["voxels"] == 3)[0]  # slicerio voxels are IJK
    np.testing.assert_allclose(np.asarray(seg["ijkToLPS"])[:3] @ np.append(ijk, 1), expected, atol=1e-9)


def test_segmentation_nrrd_segments_match_label_map(tmp_path):
    ct = sheared_ct(22.0)
    labels = labels_for(ct)
    write_segmentation_nrrd(tmp_path / "s.seg.nrrd", labels, ct)
    seg = slicerio.read_segmentation(str(tmp_path / "s.seg.nrrd"))
    np.testing.assert_allclose(seg["ijkToLPS"], ct.affine, atol=1e-12)
    assert [s["labelValue"] for s in seg["segments"]] == [1, 3, 4]  # present subtypes only
    for segment in seg["segments"]:
        subtype = SUBTYPE_BY_LABEL[segment["labelValue"]]
        assert segment["name"] == subtype.name
        assert segment["color"] == pytest.approx(subtype.color)
        assert segment["terminology"]["type"] == list(HEMORRHAGE_TYPE)
        assert segment["terminology"]["anatomicRegion"] == list(subtype.region_code)
        voxels = np.count_nonzero(seg["voxels"] == segment["labelValue"])
        assert voxels == np.count_nonzero(labels == segment["labelValue"]) > 0
    tags = nrrd.read_header(str(tmp_path / "s.seg.nrrd"))["Segment0_Tags"]
    assert "TerminologyEntry:Segmentation category and type" in tags


def test_nifti_with_axial_axis_first_is_permuted(tmp_path):
    ct = sheared_ct(0.0)
    # same voxels stored as [k, j, i] in the file's i, j, k: file axis 0 runs superior
    perm_affine = ct.affine[:, [2, 1, 0, 3]]
    file_data = ct.hu.copy()  # file index (a, b, c) = ct (k, j, i)
    nib.save(nib.Nifti1Image(file_data, np.diag([-1, -1, 1, 1]) @ perm_affine), tmp_path / "p.nii.gz")
    back = load_ct(tmp_path / "p.nii.gz")
    assert back.shape == ct.shape
    np.testing.assert_allclose(back.affine, ct.affine, atol=2e-5)
    np.testing.assert_array_equal(back.hu, ct.hu)


def test_nrrd_in_ras_space_converted_to_lps(tmp_path):
    ct = sheared_ct(22.0)
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ct.affine
    header = {"space": "right-anterior-superior", "space directions": ras[:3, :3].T,
              "space origin": ras[:3, 3]}
    nrrd.write(str(tmp_path / "r.nrrd"), ct.hu.transpose(2, 1, 0), header)
    back = load_ct(tmp_path / "r.nrrd")
    np.testing.assert_allclose(back.affine, ct.affine, atol=1e-12)
    np.testing.assert_array_equal(back.hu, ct.hu)


def test_writers_are_atomic(tmp_path, monkeypatch):
    ct = sheared_ct()
    target = tmp_path / "l.nii.gz"
    target.write_bytes(b"previous result")

    def failing_save(img, filename):  # writes half a file, then fails
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", failing_save)
    with pytest.raises(OutputError, match="disk full"):
        write_labelmap_nifti(target, labels_for(ct), ct)
    assert target.read_bytes() == b"previous result"
    assert list(tmp_path.iterdir()) == [target]
    with pytest.raises(OutputError):
        write_ct(tmp_path / "missing-folder" / "ct.nii.gz", ct)
    with pytest.raises(OutputError, match="use .nii"):
        write_ct(tmp_path / "ct.png", ct)


# ---------------------------------------------------------------------------------------------------- errors


EYE = np.eye(4)


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda d: _write_nifti(d / "a.nii.gz", np.full((16, 16), -1000, np.int16), np.eye(4)), "single 2D"),
        (lambda d: _write_nifti(d / "a.nii.gz", np.full((8, 8, 1), -1000, np.int16), np.eye(4)), "single 2D"),
        (lambda d: _write_nifti(d / "a.nii.gz", np.full((8, 8, 4, 3), -1000, np.int16), EYE), "4 dimensions"),
        (lambda d: _write_nifti(d / "a.nii.gz", np.full((8, 8, 4), 0.5, np.float32), EYE), "not Hounsfield"),
        (lambda d: _write_bytes(d / "a.nii.gz", b"\x1f\x8bnot really gzip"), "Corrupt NIfTI"),
        (lambda d: _write_bytes(d / "a.nrrd", b"NRRD0004\nsizes: 2 2\n"), "Corrupt NRRD"),
        (lambda d: _write_bytes(d / "a.png", b"\x89PNG"), "Unsupported file"),
    ],
)
def test_file_input_errors_are_one_line(tmp_path, make, pattern):
    path = make(tmp_path)
    with pytest.raises(InputError, match=pattern) as err:
        load_ct(path)
    assert "\n" not in str(err.value)


def _shifted(ct: CTVolume) -> np.ndarray:
    a = ct.affine.copy()
    a[:3, 3] += [0.0, 0.01, 0.0]
    return a


def _rotated(ct: CTVolume) -> np.ndarray:
    a = ct.affine.copy()
    c, s = np.cos(0.01), np.sin(0.01)
    a[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ a[:3, :3]
    return a


def _scaled(ct: CTVolume) -> np.ndarray:
    a = ct.affine.copy()
    a[:3, 0] *= 1.01
    return a


@pytest.mark.parametrize(
    ("data", "affine", "pattern"),
    [
        (lambda ct: np.zeros(ct.shape[::-1][:2] + (ct.shape[0] + 1,), np.uint8), None, "shape"),
        (lambda ct: np.zeros(ct.shape[::-1], np.uint8), _shifted, "origin differs"),
        (lambda ct: np.zeros(ct.shape[::-1], np.uint8), _rotated, "directions differ"),
        (lambda ct: np.zeros(ct.shape[::-1], np.uint8), _scaled, "steps differ"),
        (lambda ct: np.full(ct.shape[::-1], 0.5, np.float32), None, "non-integer"),
        (lambda ct: np.full(ct.shape[::-1], -1, np.int16), None, "negative"),
        (lambda ct: np.full(ct.shape[::-1], 7, np.uint8), None, "labels must be 0..5"),
    ],
)
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_labelmap_errors_are_one_line(tmp_path, data, affine, pattern, suffix):
    ct = sheared_ct(22.0)
    lps = ct.affine if affine is None else affine(ct)
    array = data(ct)
    path = tmp_path / f"lab{suffix}"
    if suffix == ".nrrd":
        nrrd.write(str(path), array, {"space": "left-posterior-superior", "space directions": lps[:3, :3].T,
                                      "space origin": lps[:3, 3]})
    else:
        _write_nifti(path, array, np.diag([-1, -1, 1, 1]) @ lps)
    with pytest.raises(InputError, match=pattern) as err:
        load_labelmap(path, ct)
    assert "\n" not in str(err.value)


def test_load_labelmap_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_labelmap(tmp_path / "nope.nii.gz", sheared_ct())



def _slicer_segmentation(path: Path, ct: CTVolume, voxels_ijk: np.ndarray, segments: list[dict]) -> Path:
    """A .seg.nrrd as Slicer writes it after editing: label values in creation order, not ours."""
    for segment in segments:
        segment.setdefault("layer", 0)
        segment.setdefault("id", f"Segment_{segment['labelValue']}")
    slicerio.write_segmentation(str(path), {"voxels": voxels_ijk, "ijkToLPS": ct.affine, "segments": segments,
                                            "containedRepresentationNames": ["Binary labelmap"],
                                            "masterRepresentation": "Binary labelmap"})
    return path


def test_slicer_segmentation_mapped_to_subtypes_by_name_not_label_value(tmp_path):
    ct = sheared_ct(22.0)
    truth = labels_for(ct)
    renumber = {4: 1, 1: 2, 3: 3}  # SDH created first in Slicer gets 1, IPH 2, SAH 3
    voxels = np.zeros(ct.shape[::-1], np.uint8)
    for ours, slicer in renumber.items():
        voxels[(truth == ours).transpose(2, 1, 0)] = slicer
    path = _slicer_segmentation(tmp_path / "edited.seg.nrrd", ct, voxels, [
        {"labelValue": 1, "name": "Subdural hemorrhage"},
        {"labelValue": 2, "name": "iph"},
        # named by the user, recognised by its terminology (subarachnoid space)
        {"labelValue": 3, "name": "Segment_3", "terminology": {
            "category": list(HEMORRHAGE_CATEGORY), "type": list(HEMORRHAGE_TYPE),
            "anatomicRegion": list(SUBTYPE_BY_LABEL[3].region_code)}},
    ])
    np.testing.assert_array_equal(load_labelmap(path, ct), truth)


def test_slicer_segmentation_unknown_or_overlapping_segments_refused(tmp_path):
    ct = sheared_ct(22.0)
    voxels = np.zeros(ct.shape[::-1], np.uint8)
    voxels[3:5, 3:5, 2] = 1
    path = _slicer_segmentation(tmp_path / "a.seg.nrrd", ct, voxels, [{"labelValue": 1, "name": "Tumor"}])
    with pytest.raises(InputError, match="Tumor .*match no subtype"):
        load_labelmap(path, ct)
    layers = np.stack([voxels, voxels])  # the same voxels in two segments: Slicer stores two layers
    path = _slicer_segmentation(tmp_path / "b.seg.nrrd", ct, layers, [
        {"labelValue": 1, "name": "IPH", "layer": 0}, {"labelValue": 1, "name": "IVH", "layer": 1}])
    with pytest.raises(InputError, match="overlap"):
        load_labelmap(path, ct)


def test_segmentation_given_as_ct_is_refused_with_a_hint(tmp_path):
    ct = sheared_ct(22.0)
    write_segmentation_nrrd(tmp_path / "s.seg.nrrd", labels_for(ct), ct)
    with pytest.raises(InputError, match="segmentation, not a CT.*--mask"):
        load_ct(tmp_path / "s.seg.nrrd")
