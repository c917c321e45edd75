"""Tiny synthetic DICOM CT series for the io tests (written with pydicom into a test's tmp_path)."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from pydicom import config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def tilted_orientation(tilt_deg: float) -> tuple[float, ...]:
    """Orientation of a gantry-tilted acquisition (column direction leans towards -S, like the real files)."""
    t = np.radians(tilt_deg)
    return (1.0, 0.0, 0.0, 0.0, float(np.cos(t)), float(-np.sin(t)))


def write_slice(
    path: Path,
    pixels: np.ndarray,
    position: Sequence[float],
    orientation: Sequence[float] = AXIAL,
    pixel_spacing: tuple[float, float] = (1.0, 1.0),
    series_uid: str = "ID_series1",
    sop_uid: str | None = None,
    modality: str = "CT",
    slope: float = 1.0,
    intercept: float = -1024.0,
) -> Path:
    """Write one int16 slice (``pixels``: stored values) as DICOM; UIDs are ``ID_...`` like the real ones."""
    with config.disable_value_validation():
        return _write_slice(path, pixels, position, orientation, pixel_spacing, series_uid, sop_uid, modality,
                            slope, intercept)


def _write_slice(path, pixels, position, orientation, pixel_spacing, series_uid, sop_uid, modality, slope,
                 intercept):  # noqa: ANN001, ANN202
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.3.4." + str(zlib.crc32(path.name.encode()))
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = sop_uid or path.stem
    ds.Modality = modality
    ds.PatientID = "ID_patient"
    ds.StudyInstanceUID = "ID_study"
    ds.SeriesInstanceUID = series_uid
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
    ds.PixelSpacing = [f"{v:.6f}" for v in pixel_spacing]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleIntercept = f"{intercept:g}"
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.int16).tobytes()
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def write_series(
    folder: Path,
    z_positions: Sequence[float],
    size: int = 16,
    orientation: Sequence[float] = AXIAL,
    pixel_spacing: tuple[float, float] = (1.0, 1.0),
    step_direction: Sequence[float] | None = None,
    origin: Sequence[float] = (-8.0, -8.0, 0.0),
    hu: Callable[[np.ndarray], np.ndarray] | None = None,
    prefix: str = "ID_s",
    **kwargs: object,
) -> list[Path]:
    """One series with slices at distances ``z_positions`` along the slice normal (mm).

    Positions are ``origin + z * step_direction`` with ``step_direction . normal = 1`` (by default the normal
    itself; a tilted series passes the scanner's table axis). ``hu(points)`` gives HU at LPS points
    ``(rows, cols, 3)``; by default air outside a disc of water-like tissue.
    """
    folder.mkdir(parents=True, exist_ok=True)
    o = np.asarray(orientation, float)
    row, col = o[:3], o[3:]
    normal = np.cross(row, col)
    direction = normal if step_direction is None else np.asarray(step_direction, float)
    direction = direction / float(direction @ normal)
    dy, dx = pixel_spacing
    jj, ii = np.mgrid[0:size, 0:size]
    paths = []
    for m, z in enumerate(z_positions):
        position = np.asarray(origin, float) + z * direction
        points = position + ii[..., None] * dx * row + jj[..., None] * dy * col
        if hu is None:
            centre = position + (size / 2) * dx * row + (size / 2) * dy * col
            inside = np.linalg.norm(points - centre, axis=-1) < size * 0.35 * dx
            values = np.where(inside, 40.0, -1000.0)
        else:
            values = hu(points)
        stored = np.round((values - kwargs.get("intercept", -1024.0)) / kwargs.get("slope", 1.0))
        paths.append(write_slice(folder / f"{prefix}{m:03d}.dcm", stored, position, orientation,
                                 pixel_spacing, **kwargs))  # type: ignore[arg-type]
    return paths
