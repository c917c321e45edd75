"""Reading head CT (DICOM, NIfTI, NRRD) into a :class:`CTVolume` with exact geometry, and writing results.

DICOM geometry rules (real head CT has gantry tilt, mixed slice spacing and duplicate positions):

- Slices are ordered by their ImagePositionPatient projected on the slice normal (cross product of the
  ImageOrientationPatient rows), never by InstanceNumber or file name.
- Gantry tilt is kept as a sheared affine: its third column is the step between successive
  ImagePositionPatient points, fitted by least squares over all slices; positions must be collinear.
  The true voxel depth (distance between slice planes) then follows from ``|det(affine)|``.
- Uneven spacing (e.g. a 2.5 mm run followed by a 5 mm run) is never hidden behind one spacing: the slices
  are resampled by linear interpolation along the line of positions onto a regular grid whose spacing is
  the smallest step common in the series, covering the same extent. ``ct.resampling`` says so and
  ``ct.input_slices`` gives each input slice's fractional grid index.
- A gap (an isolated step clearly larger than both neighbouring steps: a missing slice) is refused.
- Duplicate positions (two different images at the same slice position, e.g. a repeated acquisition of the
  posterior fossa after motion) are never averaged or stacked. Rule: at every duplicated position keep the
  image that makes the kept stack most continuous, i.e. the choice that minimises the total difference
  (mean absolute difference of HU clipped to -100..150) between successive kept slices over the whole
  series, solved exactly by dynamic programming. In ID_462abff7 this keeps one coherent stack joining the
  unique slices above, while the other images of the pairs do not form a continuous stack (checked on
  sagittal reformats). The others are listed as ``InputSlice(set_aside=True)`` and named in a warning.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .constants import HEMORRHAGE_CATEGORY, HEMORRHAGE_TYPE, MAX_LABEL, SUBTYPE_BY_LABEL
from .errors import InputError, OutputError
from .volume import CTVolume, InputSlice, lps_to_ras, ras_to_lps

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
SUPERIOR = np.array([0.0, 0.0, 1.0])

# Tolerances of the DICOM geometry checks.
SAME_POSITION_MM = 0.05  # two slices closer than this along the normal share a position
ORIENTATION_TOL = 1e-3  # max difference of direction cosines within a series
COLLINEAR_FRACTION = 0.1  # max distance of a position from the fitted line, as a fraction of the step
REGULAR_FRACTION = 0.05  # steps within this fraction of the fitted step count as regular
GAP_FACTOR = 1.4  # a step this many times larger than both neighbouring steps is a missing slice
COMMON_STEP_TOL = 0.02  # relative tolerance when counting how common a step is
COMMON_STEP_MIN_COUNT = 3  # a step is "common" when at least this many steps have it


# ----------------------------------------------------------------------------------------------------
# small helpers


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (*NIFTI_SUFFIXES, *NRRD_SUFFIXES):
        if name.endswith(suffix):
            return ".nii.gz" if suffix == ".nii.gz" else suffix
    return path.suffix.lower()


@contextlib.contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path in the target folder (same suffixes); move it onto ``path`` on success."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"Output folder does not exist: {folder}")
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix="." + path.name.split(".")[0] + "-", suffix=suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _is_sheared(affine: np.ndarray, tol: float = 1e-4) -> bool:
    """True when the grid axes are not mutually orthogonal (gantry tilt; 1e-4 ignores rounding of tags)."""
    m = np.asarray(affine, dtype=float)[:3, :3]
    cols = m / np.linalg.norm(m, axis=0)
    gram = cols.T @ cols
    return bool(np.max(np.abs(gram - np.eye(3))) > tol)


def _hu_array(values: np.ndarray) -> np.ndarray:
    """int16 when the values are exactly representable, else float32."""
    if values.dtype == np.int16:
        return values
    if np.issubdtype(values.dtype, np.integer) or np.all(np.mod(values, 1) == 0):
        if values.size == 0 or (values.min() >= -32768 and values.max() <= 32767):
            return values.astype(np.int16)
    return values.astype(np.float32)


def _check_hu_range(hu: np.ndarray, source: str) -> None:
    """Refuse data that cannot be Hounsfield units of a head CT (no air at all, or absurd values)."""
    lo, hi = float(hu.min()), float(hu.max())
    if lo < -10000 or hi > 40000:
        raise InputError(f"{source}: values {lo:g}..{hi:g} are not Hounsfield units of a CT")
    if hi - lo < 100:
        raise InputError(f"{source}: values {lo:g}..{hi:g} span too little: not Hounsfield units of a CT")
    air_fraction = float(np.count_nonzero(hu < -500)) / hu.size
    if air_fraction < 0.001:
        raise InputError(
            f"{source}: no air (< -500) in values {lo:g}..{hi:g}: not Hounsfield units "
            "(missing RescaleIntercept?)"
        )


def _axial_permutation(affine: np.ndarray) -> tuple[int, int, int]:
    """Order of array axes (i, j, k): k closest to superior-inferior, then i closest to left-right."""
    directions = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    k_axis = int(np.argmax(np.abs(SUPERIOR @ directions)))
    others = sorted((a for a in range(3) if a != k_axis), key=lambda a: -abs(directions[0, a]))
    return others[0], others[1], k_axis


# ----------------------------------------------------------------------------------------------------
# DICOM


@dataclass
class _DicomSlice:
    path: Path
    position: np.ndarray
    sop_instance_uid: str


@contextlib.contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """Accept the invalid UIDs (``ID_...``) and other harmless value problems of real files silently."""
    import warnings

    from pydicom import config

    with config.disable_value_validation(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def _read_dicom_headers(folder: Path) -> tuple[list, list[Path]]:
    """All DICOM headers under ``folder`` (recursive): ((path, dataset) pairs, unparsable .dcm files)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    headers = []
    corrupt: list[Path] = []
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    for path in files:
        if path.name.upper() == "DICOMDIR":
            continue
        named_dicom = path.suffix.lower() in (".dcm", ".dicom", ".ima")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=named_dicom)
        except InvalidDicomError:
            if named_dicom:
                corrupt.append(path)
            continue
        except Exception:  # noqa: BLE001 - a file named .dcm that cannot be parsed is corrupt
            if named_dicom:
                corrupt.append(path)
            continue
        if not any(tag in ds for tag in ("SOPClassUID", "Modality", "PixelData", "Rows")):
            if named_dicom:
                corrupt.append(path)
            continue
        headers.append((path, ds))
    return headers, corrupt


def _orientation(ds: object) -> np.ndarray | None:
    iop = getattr(ds, "ImageOrientationPatient", None)
    if iop is None or len(iop) != 6:
        return None
    return np.array([float(v) for v in iop])


def _is_axial(iop: np.ndarray) -> bool:
    normal = np.cross(iop[:3], iop[3:])
    return int(np.argmax(np.abs(normal))) == 2


def _choose_series(headers: list, series_uid: str | None, folder: Path) -> tuple[str, list, list[str]]:
    """Group by SeriesInstanceUID and pick the requested or the largest axial CT series."""
    notes: list[str] = []
    by_series: dict[str, list] = {}
    for path, ds in headers:
        uid = str(getattr(ds, "SeriesInstanceUID", "") or "(no SeriesInstanceUID)")
        by_series.setdefault(uid, []).append((path, ds))

    def modality(items: list) -> str:
        return str(getattr(items[0][1], "Modality", "") or "unknown")

    if series_uid is not None:
        if series_uid not in by_series:
            raise InputError(
                f"Series {series_uid} not found in {folder}; available: {', '.join(sorted(by_series))}"
            )
        chosen = by_series[series_uid]
        if modality(chosen) != "CT":
            raise InputError(f"Series {series_uid} has modality {modality(chosen)}, not CT")
        return series_uid, chosen, notes

    ct_series = {uid: items for uid, items in by_series.items() if modality(items) == "CT"}
    if not ct_series:
        found = sorted({modality(items) for items in by_series.values()})
        raise InputError(f"No CT images in {folder}: modality {', '.join(found)}, not CT")

    def axial_count(items: list) -> int:
        return sum(1 for _, ds in items if (iop := _orientation(ds)) is not None and _is_axial(iop))

    ranked = sorted(ct_series, key=lambda uid: (-axial_count(ct_series[uid]), -len(ct_series[uid]), uid))
    chosen_uid = ranked[0]
    if len(by_series) > 1:
        others = [
            f"{uid} ({modality(items)}, {len(items)} images)" for uid, items in sorted(by_series.items())
            if uid != chosen_uid
        ]
        notes.append(
            f"Folder holds {len(by_series)} series; chose axial CT series {chosen_uid} "
            f"({len(ct_series[chosen_uid])} images, the most axial slices); others: {'; '.join(others)}"
        )
    return chosen_uid, ct_series[chosen_uid], notes


def _pixels_hu(path: Path) -> np.ndarray:
    """HU image of one DICOM file (float64), InputError if the pixel data cannot be decoded."""
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - truncated / unreadable pixel data
        reason = _one_line(exc)[:120]
        raise InputError(f"Corrupt DICOM file {path}: pixel data unreadable/unsupported ({reason})") from None
    if stored.ndim != 2:
        raise InputError(f"{path}: multi-frame or colour DICOM images are not supported ({stored.shape})")
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    if slope == 1.0 and intercept == int(intercept):
        return stored.astype(np.int32) + int(intercept)
    return stored.astype(np.float64) * slope + intercept


def _continuity_choice(groups: list[list[int]], images: list[np.ndarray]) -> list[int]:
    """At each position (group of image indices) pick one image so successive kept images differ least."""

    def difference(a: int, b: int) -> float:
        return float(np.mean(np.abs(np.clip(images[a], -100, 150) - np.clip(images[b], -100, 150))))

    cost = [np.zeros(len(groups[0]))]
    back: list[np.ndarray] = [np.zeros(len(groups[0]), dtype=int)]
    for g in range(1, len(groups)):
        prev, cur = groups[g - 1], groups[g]
        table = np.array(
            [[cost[-1][a] + difference(prev[a], b) for a in range(len(prev))] for b in cur]
        )
        back.append(table.argmin(axis=1))
        cost.append(table.min(axis=1))
    pick = [int(np.argmin(cost[-1]))]
    for g in range(len(groups) - 1, 0, -1):
        pick.append(int(back[g][pick[-1]]))
    pick.reverse()
    return [groups[g][p] for g, p in enumerate(pick)]


def _common_step(steps: np.ndarray) -> float:
    """Smallest step that occurs often in the series (e.g. 2.5 mm in a 2.5 / 5 mm series)."""
    for candidate in np.sort(steps):
        similar = np.abs(steps - candidate) <= COMMON_STEP_TOL * candidate
        if similar.sum() >= COMMON_STEP_MIN_COUNT:
            return float(np.median(steps[similar]))
    return float(np.median(steps))


def _find_gap(steps: np.ndarray) -> int | None:
    """Index of a step clearly larger than both of its neighbouring steps (a missing slice), if any."""
    if steps.size < 2:
        return None
    for m, step in enumerate(steps):
        neighbours = [steps[n] for n in (m - 1, m + 1) if 0 <= n < steps.size]
        if step > GAP_FACTOR * max(neighbours):
            return m
    return None


def _load_dicom_folder(folder: Path, series_uid: str | None) -> CTVolume:
    headers, corrupt = _read_dicom_headers(folder)
    if not headers:
        if corrupt:
            raise InputError(f"Corrupt DICOM file {corrupt[0]} (cannot be parsed); no image read in {folder}")
        raise InputError(f"No DICOM image files in {folder}")
    uid, items, notes = _choose_series(headers, series_uid, folder)
    if corrupt:
        raise InputError(f"Corrupt DICOM file {corrupt[0]} (cannot be parsed)")
    items = [(p, ds) for p, ds in items if "PixelData" in ds or "Rows" in ds]
    if not items:
        raise InputError(f"Series {uid} in {folder} holds no images")
    frames = int(getattr(items[0][1], "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise InputError(f"{items[0][0]} is a multi-frame DICOM ({frames} frames): not supported")
    if len(items) == 1:
        raise InputError(f"{items[0][0]} is a single 2D image, not a CT volume (series {uid} has one slice)")

    # Orientation and in-plane geometry must be the same for every slice.
    iops = []
    for path, ds in items:
        iop = _orientation(ds)
        if iop is None or "ImagePositionPatient" not in ds or "PixelSpacing" not in ds:
            raise InputError(f"{path} lacks ImageOrientationPatient/ImagePositionPatient/PixelSpacing")
        iops.append(iop)
    iops_arr = np.array(iops)
    if np.max(np.abs(iops_arr - iops_arr[0])) > ORIENTATION_TOL:
        worst = int(np.argmax(np.max(np.abs(iops_arr - iops_arr[0]), axis=1)))
        raise InputError(
            f"Inconsistent ImageOrientationPatient within series {uid}: {items[worst][0].name} differs from "
            f"{items[0][0].name}"
        )
    iop = iops_arr.mean(axis=0)
    row_dir = iop[:3] / np.linalg.norm(iop[:3])
    col_dir = iop[3:] - (iop[3:] @ row_dir) * row_dir  # orthogonal to the row (DS rounding of the tags)
    col_dir /= np.linalg.norm(col_dir)
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal)
    if not _is_axial(iop):
        raise InputError(f"Series {uid} is not axial (slice normal {np.round(normal, 2).tolist()})")
    spacings = {tuple(round(float(v), 6) for v in ds.PixelSpacing) for _, ds in items}
    sizes = {(int(ds.Rows), int(ds.Columns)) for _, ds in items}
    if len(spacings) > 1 or len(sizes) > 1:
        raise InputError(
            f"Slices of series {uid} differ in PixelSpacing or size: {sorted(spacings)} {sorted(sizes)}"
        )
    dy, dx = (float(v) for v in next(iter(spacings)))

    slices = [
        _DicomSlice(
            path=p,
            position=np.array([float(v) for v in ds.ImagePositionPatient]),
            sop_instance_uid=str(getattr(ds, "SOPInstanceUID", "") or p.stem),
        )
        for p, ds in items
    ]
    # Spatial order along the normal; equal positions keep a stable order by SOPInstanceUID.
    slices.sort(key=lambda s: (round(float(s.position @ normal), 3), s.sop_instance_uid))
    z_all = np.array([s.position @ normal for s in slices])
    images = [_pixels_hu(s.path) for s in slices]

    # Group images sharing a position; choose one per position.
    groups: list[list[int]] = [[0]]
    for m in range(1, len(slices)):
        if z_all[m] - z_all[groups[-1][0]] < SAME_POSITION_MM:
            groups[-1].append(m)
        else:
            groups.append([m])
    kept = _continuity_choice(groups, images) if any(len(g) > 1 for g in groups) else [g[0] for g in groups]
    set_aside = sorted(set(range(len(slices))) - set(kept))
    if set_aside:
        notes.append(
            f"{len(set_aside)} images share a slice position with another image and were set aside "
            "(kept the image continuous with its neighbours): "
            + ", ".join(slices[m].sop_instance_uid for m in set_aside)
        )
    if len(kept) < 2:
        raise InputError(f"Series {uid} has a single slice position: a 2D image, not a CT volume")

    positions = np.array([slices[m].position for m in kept])
    z = z_all[kept]
    steps = np.diff(z)
    gap = _find_gap(steps)
    if gap is not None:
        neighbour_steps = ", ".join(f"{steps[n]:.2f}" for n in (gap - 1, gap + 1) if 0 <= n < steps.size)
        raise InputError(
            f"Missing slice(s) in series {uid}: a {steps[gap]:.2f} mm step between "
            f"{slices[kept[gap]].sop_instance_uid} and {slices[kept[gap + 1]].sop_instance_uid} "
            f"where its neighbours step {neighbour_steps} mm"
        )

    # Positions must lie on one line: fit position = origin + z * direction (direction . normal = 1).
    design = np.column_stack([np.ones_like(z), z - z[0]])
    coef, *_ = np.linalg.lstsq(design, positions, rcond=None)
    line_origin, line_dir = coef[0], coef[1]
    residual = float(np.max(np.linalg.norm(positions - design @ coef, axis=1)))
    median_step = float(np.median(steps))
    if residual > max(COLLINEAR_FRACTION * median_step, 0.01):
        raise InputError(
            f"Slice positions of series {uid} are not on one line (off by up to {residual:.2f} mm): "
            "inconsistent ImagePositionPatient"
        )

    index = np.arange(len(kept), dtype=float)
    fit_z = np.polyfit(index, z, 1)
    regular = bool(np.max(np.abs(steps - fit_z[0])) <= REGULAR_FRACTION * abs(fit_z[0]))
    hu_stack = np.stack([images[m] for m in kept])
    resampling = None
    if regular:
        idx_design = np.column_stack([np.ones_like(index), index])
        (origin, step_vec), *_ = np.linalg.lstsq(idx_design, positions, rcond=None)
        grid_k_of = (z - (origin @ normal)) / float(step_vec @ normal)
        volume = hu_stack
    else:
        spacing = _common_step(steps)
        extent = float(z[-1] - z[0])
        n_grid = int(round(extent / spacing)) + 1
        grid_z = z[0] + spacing * np.arange(n_grid)
        origin = line_origin
        step_vec = line_dir * spacing
        grid_k_of = (z - z[0]) / spacing
        # Linear interpolation between the neighbouring input slices along the line of positions.
        upper = np.clip(np.searchsorted(z, grid_z, side="right"), 1, len(z) - 1)
        lower = upper - 1
        weight = np.clip((grid_z - z[lower]) / (z[upper] - z[lower]), 0.0, 1.0)[:, None, None]
        # a grid plane within 0.01 mm of an input slice takes that slice unchanged
        weight = np.where(weight * (z[upper] - z[lower])[:, None, None] < 0.01, 0.0, weight)
        weight = np.where((1 - weight) * (z[upper] - z[lower])[:, None, None] < 0.01, 1.0, weight)
        weight = weight.astype(np.float32)
        stack32 = hu_stack.astype(np.float32)
        volume = (1.0 - weight) * stack32[lower] + weight * stack32[upper]
        uniq = sorted({round(float(s), 2) for s in steps})
        resampling = (
            f"Uneven slice spacing ({', '.join(f'{s:g}' for s in uniq)} mm) resampled by linear interpolation"
            " "
            f"along the slice positions onto a regular {spacing:.3g} mm grid of {n_grid} slices covering the "
            f"same extent ({len(kept)} input slices)"
        )
        notes.append(resampling)

    affine = np.eye(4)
    affine[:3, 0] = row_dir * dx
    affine[:3, 1] = col_dir * dy
    affine[:3, 2] = step_vec
    affine[:3, 3] = origin

    tilt = float(np.degrees(np.arccos(min(1.0, abs(step_vec @ normal) / np.linalg.norm(step_vec)))))
    if tilt > 0.5:
        notes.append(f"Gantry tilt {tilt:.1f} deg kept as a sheared grid (voxel depth: plane distance)")

    kept_pos = {m: n for n, m in enumerate(kept)}
    input_slices = []
    for m, s in enumerate(slices):
        if m in kept_pos:
            grid_k = float(grid_k_of[kept_pos[m]])
        else:  # a set-aside image lies where its kept twin lies
            twin = next(n for g in groups if m in g for n in g if n in kept_pos)
            grid_k = float(grid_k_of[kept_pos[twin]])
        input_slices.append(
            InputSlice(index=m, z_mm=float(z_all[m]), grid_k=grid_k, sop_instance_uid=s.sop_instance_uid,
                       set_aside=m not in kept_pos)
        )
    hu = _hu_array(volume) if resampling is None else volume.astype(np.float32)
    _check_hu_range(hu, str(folder))
    return CTVolume(hu=hu, affine=affine, source=str(folder), series_uid=uid, input_slices=input_slices,
                    resampling=resampling, warnings=notes)


# ----------------------------------------------------------------------------------------------------
# NIfTI / NRRD


def _volume_from_ijk(data: np.ndarray, affine_lps: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Array [i, j, k] + IJK->LPS affine -> array [k, j, i] with k the axial axis, and the matching affine."""
    data = np.asarray(data)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2 or (data.ndim == 3 and 1 in data.shape):
        raise InputError(f"{source} is a single 2D image (shape {data.shape}), not a CT volume")
    if data.ndim != 3:
        raise InputError(f"{source} has {data.ndim} dimensions (shape {data.shape}); expected a 3D volume")
    perm = _axial_permutation(affine_lps)
    affine = np.eye(4)
    affine[:3, :3] = affine_lps[:3, list(perm)]
    affine[:3, 3] = affine_lps[:3, 3]
    data = np.transpose(data, perm)  # now [i, j, k] with k axial
    return np.ascontiguousarray(np.transpose(data, (2, 1, 0))), affine


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"Corrupt NIfTI file {path}: {_one_line(exc)[:120]}") from None
    return data, ras_to_lps(img.affine)


def _read_nrrd(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nrrd

    try:
        data, header = nrrd.read(str(path))
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"Corrupt NRRD file {path}: {_one_line(exc)[:120]}") from None
    directions = header.get("space directions")
    if directions is None:
        raise InputError(f"{path} has no 'space directions': its geometry is unknown")
    directions = np.asarray(directions, dtype=float)
    spatial = [a for a in range(directions.shape[0]) if np.all(np.isfinite(directions[a]))]
    if len(spatial) != directions.shape[0]:
        extra = [a for a in range(data.ndim) if a not in spatial]
        if data.ndim == directions.shape[0] and all(data.shape[a] == 1 for a in extra):
            data = data.reshape([data.shape[a] for a in spatial])
            directions = directions[spatial]
        else:
            raise InputError(f"{path} is not a single scalar volume (sizes {data.shape})")
    if directions.shape != (3, 3):
        raise InputError(f"{path} has {directions.shape[0]} spatial axes; expected a 3D volume")
    space = str(header.get("space", "left-posterior-superior")).lower()
    affine = np.eye(4)
    affine[:3, :3] = directions.T
    affine[:3, 3] = np.asarray(header.get("space origin", np.zeros(3)), dtype=float)
    if space in ("right-anterior-superior", "ras"):
        affine = ras_to_lps(affine)
    elif space not in ("left-posterior-superior", "lps"):
        raise InputError(f"{path}: NRRD space '{space}' is not supported (use LPS or RAS)")
    return data, affine


def _read_image_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    suffix = _suffix(path)
    if suffix in NIFTI_SUFFIXES:
        data, affine = _read_nifti(path)
    elif suffix in NRRD_SUFFIXES:
        data, affine = _read_nrrd(path)
    else:
        raise InputError(f"Unsupported file type {path.name}: give a DICOM folder, .nii/.nii.gz or .nrrd")
    return _volume_from_ijk(data, affine, str(path))


def load_ct(path: str | Path, series_uid: str | None = None) -> CTVolume:
    """Load a head CT (DICOM folder, NIfTI or NRRD) in Hounsfield units with exact LPS geometry.

    Raises :class:`InputError` with a one-line message for anything that cannot be used as is.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"Input not found: {path}")
    with _quiet_pydicom():
        if path.is_dir():
            return _load_dicom_folder(path, series_uid)
        suffix = _suffix(path)
        if suffix not in (*NIFTI_SUFFIXES, *NRRD_SUFFIXES):
            import pydicom

            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=suffix == ".dcm")
                if not any(tag in ds for tag in ("SOPClassUID", "Modality", "PixelData", "Rows")):
                    raise ValueError("no DICOM image attributes")
            except Exception:  # noqa: BLE001
                if suffix == ".dcm":
                    raise InputError(f"Corrupt DICOM file {path} (cannot be parsed)") from None
                raise InputError(
                    f"Unsupported file {path.name}: give a DICOM folder, .nii/.nii.gz or .nrrd/.nhdr"
                ) from None
            raise InputError(f"{path} is a single 2D DICOM image: give the folder of the whole series")
    if _is_segmentation(path):
        raise InputError(f"{path.name} is a Slicer segmentation, not a CT: give the CT as input and the "
                         "segmentation with --mask")
    hu_raw, affine = _read_image_file(path)
    if not (np.issubdtype(hu_raw.dtype, np.integer) or np.issubdtype(hu_raw.dtype, np.floating)):
        raise InputError(f"{path}: voxel type {hu_raw.dtype} is not a scalar image")
    if not np.all(np.isfinite(hu_raw)):
        raise InputError(f"{path} contains NaN or infinite values")
    hu = _hu_array(hu_raw)
    _check_hu_range(hu, str(path))
    warnings = []
    if _is_sheared(affine):
        warnings.append(f"Sheared grid (gantry tilt) kept as is from {path.name}")
    return CTVolume(hu=hu, affine=affine, source=str(path), warnings=warnings)


def _is_segmentation(path: Path) -> bool:
    return path.name.lower().endswith(".seg.nrrd")


def _subtype_of_segment(segment: dict) -> int | None:
    """Label of the subtype a Slicer segment stands for: by name or key (any case), else by the
    anatomic region code of its terminology; None when it matches none."""
    name = str(segment.get("name", "")).strip().lower()
    for label, subtype in SUBTYPE_BY_LABEL.items():
        if name in (subtype.name.lower(), subtype.key.lower()):
            return label
    region = (segment.get("terminology") or {}).get("anatomicRegion") or []
    codes = {tuple(subtype.region_code[:2]): label for label, subtype in SUBTYPE_BY_LABEL.items()}
    return codes.get(tuple(str(c) for c in region[:2])) if len(region) >= 2 else None


def _read_segmentation(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A Slicer ``.seg.nrrd`` as a label map [i, j, k] with ICHAnalyzer's label values, and its IJK->LPS
    affine. Segments are matched to subtypes by name (never by their label value, which Slicer assigns
    in creation order); overlapping segments of different subtypes are refused."""
    import slicerio

    try:
        seg = slicerio.read_segmentation(str(path))
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"Corrupt segmentation file {path}: {_one_line(exc)[:120]}") from None
    voxels = np.asarray(seg["voxels"])
    if voxels.ndim not in (3, 4):
        raise InputError(f"{path} is not a 3D segmentation (voxel array shape {voxels.shape})")
    labels = np.zeros(voxels.shape[-3:], np.uint8)
    unknown = []
    for segment in seg.get("segments", []):
        mask = slicerio.segment_mask(seg, segment)
        if not mask.any():
            continue
        label = _subtype_of_segment(segment)
        if label is None:
            unknown.append(str(segment.get("name", segment.get("id"))))
            continue
        if np.any(labels[mask] != 0) and np.any(labels[mask] != label):
            raise InputError(f"Segments of {path.name} overlap (at '{segment.get('name')}'): "
                             "each voxel must belong to one subtype")
        labels[mask] = label
    if unknown:
        names = ", ".join(f"{s.key} / {s.name}" for s in SUBTYPE_BY_LABEL.values())
        raise InputError(f"Segment(s) {', '.join(unknown)} of {path.name} match no subtype; "
                         f"name them {names}")
    return labels, np.asarray(seg["ijkToLPS"], dtype=float)


def load_labelmap(path: str | Path, reference: CTVolume) -> np.ndarray:
    """Load a label map (labels 0..5) that lies on the grid of ``reference``; uint8 [k, j, i].

    NIfTI/NRRD label maps are read as is; a Slicer ``.seg.nrrd`` is read segment by segment, each
    segment mapped to its subtype by name or terminology (see :func:`_read_segmentation`).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"Label map not found: {path}")
    if _is_segmentation(path):
        data, affine = _volume_from_ijk(*_read_segmentation(path), str(path))
    else:
        data, affine = _read_image_file(path)
    if data.shape != reference.shape:
        raise InputError(
            f"Label map {path.name} has shape {data.shape} (k, j, i), the CT {reference.shape}: "
            "not on the CT grid"
        )
    offset = float(np.max(np.abs(affine[:3, 3] - reference.affine[:3, 3])))
    if offset > 1e-3:
        raise InputError(
            f"Label map {path.name} origin differs from the CT's by {offset:.4g} mm: not on the CT grid"
        )
    ref_lin = reference.affine[:3, :3]
    ref_norm = np.linalg.norm(ref_lin, axis=0)
    size_diff = float(np.max(np.abs(np.linalg.norm(affine[:3, :3], axis=0) - ref_norm)))
    lab_norm = np.linalg.norm(affine[:3, :3], axis=0)
    dir_diff = float(np.max(np.abs(affine[:3, :3] / lab_norm - ref_lin / ref_norm)))
    if size_diff > 1e-3:
        raise InputError(f"Label map {path.name} voxel steps differ from the CT's by {size_diff:.4g} mm")
    if dir_diff > 1e-4:
        raise InputError(f"Label map {path.name} axis directions differ from the CT's by {dir_diff:.3g}")
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
            raise InputError(f"Label map {path.name} has non-integer values")
    if data.size and data.min() < 0:
        raise InputError(f"Label map {path.name} has negative values (min {data.min():g})")
    if data.size and data.max() > MAX_LABEL:
        raise InputError(f"Label map {path.name} has label {data.max():g}; labels must be 0..{MAX_LABEL}")
    return data.astype(np.uint8)


# ----------------------------------------------------------------------------------------------------
# writers


def _nifti_image(array_kji: np.ndarray, affine_lps: np.ndarray) -> object:
    import nibabel as nib

    affine_ras = lps_to_ras(affine_lps)
    img = nib.Nifti1Image(np.asarray(array_kji).transpose(2, 1, 0), affine_ras)
    img.set_sform(affine_ras, code=1)
    if _is_sheared(affine_lps):
        img.set_qform(None, code=0)
    else:
        img.set_qform(affine_ras, code=1)
    img.header.set_xyzt_units("mm", "sec")
    return img


def _write_nifti(path: Path, array_kji: np.ndarray, affine_lps: np.ndarray) -> None:
    import nibabel as nib

    img = _nifti_image(array_kji, affine_lps)
    try:
        with _atomic_path(path) as tmp:
            nib.save(img, str(tmp))
    except OSError as exc:
        raise OutputError(f"Cannot write {path}: {_one_line(exc)}") from None


def _write_nrrd(path: Path, array_kji: np.ndarray, affine_lps: np.ndarray) -> None:
    import nrrd

    header = {
        "space": "left-posterior-superior",
        "space directions": np.asarray(affine_lps, dtype=float)[:3, :3].T,
        "space origin": np.asarray(affine_lps, dtype=float)[:3, 3],
        "kinds": ["domain", "domain", "domain"],
        "encoding": "gzip",
    }
    try:
        with _atomic_path(path) as tmp:
            nrrd.write(str(tmp), np.asarray(array_kji).transpose(2, 1, 0), header, index_order="F")
    except OSError as exc:
        raise OutputError(f"Cannot write {path}: {_one_line(exc)}") from None


def _check_labels(labels: np.ndarray, ct: CTVolume) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != ct.shape:
        raise ValueError(f"label map shape {labels.shape} differs from the CT's {ct.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > MAX_LABEL):
        raise ValueError(f"labels must be 0..{MAX_LABEL}")
    return labels.astype(np.uint8)


def write_labelmap_nifti(path: str | Path, labels: np.ndarray, ct: CTVolume) -> None:
    """Write a uint8 label map as NIfTI on the CT grid (sform = exact RAS affine; qform unless sheared)."""
    _write_nifti(Path(path), _check_labels(labels, ct), ct.affine)


def write_ct(path: str | Path, ct: CTVolume) -> None:
    """Write the CT (HU) as NIfTI (.nii/.nii.gz) or NRRD (.nrrd/.nhdr) by suffix, with its exact affine."""
    path = Path(path)
    suffix = _suffix(path)
    if suffix in NIFTI_SUFFIXES:
        _write_nifti(path, ct.hu, ct.affine)
    elif suffix in (".nrrd",):
        _write_nrrd(path, ct.hu, ct.affine)
    else:
        raise OutputError(f"Cannot write CT as {path.name}: use .nii, .nii.gz or .nrrd")


def _terminology(label: int) -> dict:
    subtype = SUBTYPE_BY_LABEL[label]
    return {
        "contextName": "Segmentation category and type - 3D Slicer General Anatomy list",
        "category": list(HEMORRHAGE_CATEGORY),
        "type": list(HEMORRHAGE_TYPE),
        "anatomicContextName": "Anatomic codes - DICOM master list",
        "anatomicRegion": list(subtype.region_code),
    }


def write_segmentation_nrrd(path: str | Path, labels: np.ndarray, ct: CTVolume) -> None:
    """Write a Slicer ``.seg.nrrd`` (slicerio) with one segment per subtype present in ``labels``."""
    import slicerio

    labels = _check_labels(labels, ct)
    present = [int(v) for v in np.unique(labels) if v != 0]
    segments = []
    for label in present:
        subtype = SUBTYPE_BY_LABEL[label]
        segments.append({
            "id": f"Segment_{subtype.key}",
            "name": subtype.name,
            "labelValue": label,
            "layer": 0,
            "color": [float(c) for c in subtype.color],
            "terminology": _terminology(label),
            "status": "completed",
        })
    segmentation = {
        "voxels": labels.transpose(2, 1, 0),
        "ijkToLPS": np.asarray(ct.affine, dtype=float),
        "containedRepresentationNames": ["Binary labelmap"],
        "masterRepresentation": "Binary labelmap",
        "segments": segments,
    }
    path = Path(path)
    try:
        with _atomic_path(path) as tmp:
            slicerio.write_segmentation(str(tmp), segmentation)
    except OSError as exc:
        raise OutputError(f"Cannot write {path}: {_one_line(exc)}") from None
