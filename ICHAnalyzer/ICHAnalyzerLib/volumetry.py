"""Hemorrhage volumetry: true voxel volume, automatic ABC/2 (Kothari 1996) and extra-axial thickness.

Conventions (all measurements in millimetres, end points in LPS):

- Volume = voxel count x true voxel volume ``|det(affine[:3, :3])|`` (right on sheared, tilted grids).
- Measurements are made in the acquired (possibly tilted) axial slices ``k``. In-plane, pixel ``(i, j)``
  sits at ``(x, y) = (i * dx, j * dy)`` in the orthonormal frame of the slice (columns 0 and 1 of the
  affine must be orthogonal). The slice thickness used for C is the distance between slice planes,
  ``dz = |det| / (dx * dy)``, not the length of the third affine column.
- Lengths of the rasterized lesion are made unbiased for rasterized ellipses: centre-to-centre lengths
  come out about half a pixel short and edge-to-edge ones about half a pixel long (a longest diameter
  or chord picks the luckiest pixels), so each end gets a quarter pixel from the first or loses one from
  the second. Over random ellipses (0.5-1 mm pixels) the mean error of A and B is < 0.15 pixel, SD 0.3-0.5
  pixel (checked in ``Testing/Python/test_volumetry_abc2.py``). The pixel width along a unit direction u
  is ``w(u) = sqrt((ux dx)^2 + (uy dy)^2)``.
- ABC/2, per label and per hematoma, on the slice with the largest area (the first one on ties):
  A = longest diameter: the two pixel centres farthest apart (convex hull), + w/4 at each end
  (``END_MARGIN_PIXELS``); its end points are those centres moved out by w/4 along A (inside the end
  pixels). B = longest chord perpendicular to A: lines perpendicular to A, a quarter pixel apart, are
  sampled every quarter pixel (nearest pixel); B is the longest *contiguous* run of lesion samples, edge
  to edge, - w/4 at each end (``B_TRIM_PIXELS``), so the drawn B line lies on the lesion, and a line that
  crosses two lobes counts the longer lobe only. (Lines one pixel apart are tried first and the best
  four refined, which matches the exhaustive search within a fraction of a pixel.)
  C = dz x (slices with area >= 75 % of the largest + 0.5 x slices with 25-75 %; < 25 % count 0);
  unweighted C = dz x number of slices with lesion. ABC/2 = A * B * C / 2 (mL = mm^3 / 1000).
- Max thickness, for SDH and EDH (and each of their hematomas; None for the other subtypes and for
  ``total``, where it has no clinical use): ``2 x (max EDT - w/4)`` where EDT is the
  in-plane Euclidean distance transform (anisotropic sampling, each slice on its own: distance from a
  lesion pixel centre to the nearest outside pixel centre) and ``w`` the pixel width along the direction
  to that outside pixel; the quarter pixel makes rasterized plates unbiased (rasterized discs read about
  one pixel short: their jagged edge brings the nearest outside pixel closer). End points: the deepest
  pixel centre -/+ ``(max EDT - w/4)`` along the line to its nearest outside pixel (both sides), so the
  drawn line is the diameter of the largest inscribed in-plane disc; for an extra-axial collection it
  approximates the thickness perpendicular to the inner table.
- ABC/2 is reported as clinically applicable only for IPH (the population Kothari validated it in);
  not for IVH (a cast of the ventricles), SAH (sheets in the sulci and cisterns) or SDH/EDH (crescents or
  lenses: thickness is the measure used). ``total`` is applicable only when IPH is the only label present.
  For several IPH hematomas, compare the per-hematoma values (ABC/2 of a union spans the gaps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from .constants import SUBTYPES
from .errors import InputError

FULL_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)
ABC2_APPLICABLE_KEYS = frozenset({"IPH"})
_MM_DECIMALS = 2
_ML_DECIMALS = 4
_PCT_DECIMALS = 2
# Added at each end of A's centre-to-centre length, in pixel widths along A (see the module docstring).
END_MARGIN_PIXELS = 0.25
# Taken off each end of a B chord measured edge to edge along the sampled line (pixel widths).
B_TRIM_PIXELS = 0.25
_B_CANDIDATE_LINES = 4
# Taken off the distance from the deepest pixel centre to the nearest outside pixel centre (pixel widths).
THICKNESS_MARGIN_PIXELS = 0.25


@dataclass(frozen=True)
class _Grid:
    """Geometry of the label map: affine (IJK -> LPS), in-plane spacing, plane distance, voxel volume."""

    affine: np.ndarray
    dx: float
    dy: float
    dz: float
    voxel_mm3: float

    def width(self, direction: np.ndarray) -> float:
        """One pixel width along an in-plane unit direction ``(ux, uy)`` (mm)."""
        return float(np.hypot(direction[0] * self.dx, direction[1] * self.dy))

    def to_lps(self, ijk: np.ndarray) -> list[list[float]]:
        """Continuous voxel coordinates ``(n, 3)`` in (i, j, k) order to rounded LPS points."""
        lps = np.asarray(ijk, float) @ self.affine[:3, :3].T + self.affine[:3, 3]
        return [[round(float(c), _MM_DECIMALS) for c in p] for p in lps]


def _grid(affine: np.ndarray) -> _Grid:
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InputError("The label map's affine must be a finite 4x4 matrix.")
    col_i, col_j = affine[:3, 0], affine[:3, 1]
    dx, dy = float(np.linalg.norm(col_i)), float(np.linalg.norm(col_j))
    voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
    if dx == 0 or dy == 0 or voxel_mm3 == 0:
        raise InputError("The label map's affine is singular (zero voxel size).")
    if abs(col_i @ col_j) / (dx * dy) > 1e-3:
        raise InputError("The label map's in-plane axes are not orthogonal; cannot measure in its slices.")
    return _Grid(affine, dx, dy, voxel_mm3 / (dx * dy), voxel_mm3)


def _rnd(value: float | None, decimals: int) -> float | None:
    return None if value is None else round(float(value), decimals)


# --------------------------------------------------------------------------- in-plane chords

def _longest_runs(inside: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of True along axis 1 of a 2D array (gaps of one sample bridged): line, first, last index."""
    bridged = inside.copy()
    bridged[:, 1:-1] |= inside[:, :-2] & inside[:, 2:]
    padded = np.zeros((bridged.shape[0], bridged.shape[1] + 2), np.int8)
    padded[:, 1:-1] = bridged
    edges = np.diff(padded, axis=1)
    start_line, start = np.nonzero(edges == 1)
    _, stop = np.nonzero(edges == -1)
    return start_line, start, stop - 1


def _inside(mask2d: np.ndarray, grid: _Grid, xy: np.ndarray) -> np.ndarray:
    """Whether the nearest pixel of each in-plane point ``xy[..., 2]`` (mm, crop frame) is lesion."""
    i = np.rint(xy[..., 0] / grid.dx).astype(np.intp)
    j = np.rint(xy[..., 1] / grid.dy).astype(np.intp)
    valid = (i >= 0) & (i < mask2d.shape[1]) & (j >= 0) & (j < mask2d.shape[0])
    inside = np.zeros(i.shape, bool)
    inside[valid] = mask2d[j[valid], i[valid]]
    return inside


def _row_extremes(mask2d: np.ndarray, grid: _Grid) -> np.ndarray:
    """Left- and right-most pixel centre of each row, in mm: every convex-hull vertex is one of them."""
    rows = np.nonzero(mask2d.any(axis=1))[0]
    sub = mask2d[rows]
    first = np.argmax(sub, axis=1)
    last = sub.shape[1] - 1 - np.argmax(sub[:, ::-1], axis=1)
    j = np.concatenate([rows, rows])
    i = np.concatenate([first, last])
    return np.unique(np.stack([i * grid.dx, j * grid.dy], axis=1), axis=0)


def _max_feret(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two points farthest apart (centre to centre)."""
    candidates = points
    if len(points) > 8:
        try:
            candidates = points[ConvexHull(points).vertices]
        except QhullError:  # collinear points
            candidates = points
    d2 = ((candidates[:, None, :] - candidates[None, :, :]) ** 2).sum(-1)
    a, b = np.unravel_index(int(np.argmax(d2)), d2.shape)
    return candidates[a], candidates[b]


def _diameters(mask2d: np.ndarray, grid: _Grid) -> dict:
    """A and B of one slice (crop coordinates): lengths (mm) and end points as in-plane (x, y) mm."""
    extremes = _row_extremes(mask2d, grid)
    p, q = _max_feret(extremes)
    if np.allclose(p, q):  # a single pixel: measure along the columns and the rows
        u = np.array([1.0, 0.0])
    else:
        u = (q - p) / np.linalg.norm(q - p)
    m_u = END_MARGIN_PIXELS * grid.width(u)
    a_len = float((q - p) @ u) + 2 * m_u
    a_ends = np.array([p - u * m_u, q + u * m_u])

    # B: the longest contiguous chord along v (perpendicular to A), on lines a quarter pixel apart, each
    # sampled every quarter pixel (nearest pixel): the run of lesion samples, edge to edge, less a margin.
    # Lines one pixel apart, sampled every half pixel, first pick where to look (the best few, +-1 pixel).
    v = np.array([-u[1], u[0]])
    w_v = grid.width(v)
    pixel = min(grid.dx, grid.dy)
    t_proj, v_proj = extremes @ u, extremes @ v
    v_lo, v_hi = v_proj.min() - w_v, v_proj.max() + w_v

    def runs(offsets: np.ndarray, step: float) -> tuple[np.ndarray, ...]:
        along = np.arange(v_lo, v_hi + step / 2, step)
        inside = _inside(mask2d, grid, offsets[:, None, None] * u + along[None, :, None] * v)
        line, first, last = _longest_runs(inside)
        return along, line, first, last, (last - first) * step

    coarse = np.arange(t_proj.min(), t_proj.max() + pixel / 2, pixel)
    _, line, _, _, extent = runs(coarse, pixel / 2)
    order = np.argsort(-extent, kind="stable")
    best_lines = list(dict.fromkeys(line[order].tolist()))[:_B_CANDIDATE_LINES]
    step = pixel / 4
    fine = np.unique(np.concatenate([coarse[b] + np.arange(-4, 5) * step for b in best_lines]))
    fine = fine[(fine >= t_proj.min() - pixel / 2) & (fine <= t_proj.max() + pixel / 2)]
    along, line, first, last, extent = runs(fine, step)
    trim = B_TRIM_PIXELS * w_v - step / 2
    lengths = extent - 2 * trim
    mid_t = float((p + q) @ u / 2)
    best = int(np.argmax(lengths - 1e-6 * np.abs(fine[line] - mid_t) / grid.width(u)))
    t_best = fine[line[best]]
    b_ends = np.array([t_best * u + (along[first[best]] + trim) * v,
                       t_best * u + (along[last[best]] - trim) * v])
    return {"A": a_len, "B": float(lengths[best]), "A_ends": a_ends, "B_ends": b_ends}


def _thickness(mask: np.ndarray, grid: _Grid) -> tuple[float, np.ndarray, int]:
    """Max in-plane thickness of a 3D mask (crop): length (mm), two end points in (x, y) mm, slice index."""
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)))
    # Distances across slices are made larger than any in-plane one, so each slice is measured on its own.
    k_weight = 10.0 * (padded.shape[1] * grid.dy + padded.shape[2] * grid.dx) + 1.0
    dist, nearest = ndimage.distance_transform_edt(
        padded, sampling=(k_weight, grid.dy, grid.dx), return_indices=True)
    k, j, i = np.unravel_index(int(np.argmax(dist)), dist.shape)
    centre = np.array([(i - 1) * grid.dx, (j - 1) * grid.dy])
    outside = np.array([(nearest[2, k, j, i] - 1) * grid.dx, (nearest[1, k, j, i] - 1) * grid.dy])
    d = (outside - centre) / np.linalg.norm(outside - centre)
    radius = float(dist[k, j, i]) - THICKNESS_MARGIN_PIXELS * grid.width(d)
    return 2 * radius, np.array([centre - radius * d, centre + radius * d]), int(k)


# --------------------------------------------------------------------------- one mask

def _ijk_points(xy: np.ndarray, k: float, offset: tuple[int, int, int], grid: _Grid) -> np.ndarray:
    """In-plane (x, y) mm points of slice ``k`` of a crop starting at ``offset`` (k, j, i) to (i, j, k)."""
    xy = np.atleast_2d(xy)
    return np.column_stack([xy[:, 0] / grid.dx + offset[2], xy[:, 1] / grid.dy + offset[1],
                            np.full(len(xy), k + offset[0])])


def _abc2(mask: np.ndarray, offset: tuple[int, int, int], grid: _Grid) -> dict:
    areas = np.count_nonzero(mask, axis=(1, 2))
    k = int(np.argmax(areas))
    ratio = areas / areas[k]
    full = int(np.count_nonzero(ratio >= 0.75))
    half = int(np.count_nonzero((ratio >= 0.25) & (ratio < 0.75)))
    counted = int(np.count_nonzero(areas))
    dia = _diameters(mask[k], grid)
    c_mm = (full + 0.5 * half) * grid.dz
    c_unweighted = counted * grid.dz
    detail = {
        "A_mm": _rnd(dia["A"], _MM_DECIMALS),
        "B_mm": _rnd(dia["B"], _MM_DECIMALS),
        "C_mm": _rnd(c_mm, _MM_DECIMALS),
        "C_unweighted_mm": _rnd(c_unweighted, _MM_DECIMALS),
        "slice_index": k + offset[0],
        "A_endpoints": grid.to_lps(_ijk_points(dia["A_ends"], k, offset, grid)),
        "B_endpoints": grid.to_lps(_ijk_points(dia["B_ends"], k, offset, grid)),
        "slices_full": full,
        "slices_half": half,
        "slices_counted_unweighted": counted,
    }
    ab = dia["A"] * dia["B"] / 2 / 1000.0
    return {"abc2_ml": ab * c_mm, "abc2_unweighted_ml": ab * c_unweighted, "abc2": detail}


class _Measurer:
    """Measures boolean crops of the label map; remembers volume and ABC/2 of each crop, since a hematoma of
    a subtype is often also a hematoma of the union (same box and voxel count means the same voxels)."""

    def __init__(self, grid: _Grid) -> None:
        self.grid = grid
        self._cache: dict[tuple, dict] = {}

    def measure(self, mask: np.ndarray, offset: tuple[int, int, int], thickness: bool) -> dict:
        """Volume, ABC/2 and (if asked) thickness of a non-empty crop whose voxel [0, 0, 0] is ``offset``."""
        grid = self.grid
        count = int(np.count_nonzero(mask))
        key = (offset, mask.shape, count)
        if key not in self._cache:
            volume_ml = count * grid.voxel_mm3 / 1000.0
            abc = _abc2(mask, offset, grid)

            def pct(estimate: float) -> float:
                return _rnd((estimate - volume_ml) / volume_ml * 100.0, _PCT_DECIMALS)

            self._cache[key] = {
                "voxel_count": count,
                "volume_ml": _rnd(volume_ml, _ML_DECIMALS),
                "abc2_ml": _rnd(abc["abc2_ml"], _ML_DECIMALS),
                "abc2_unweighted_ml": _rnd(abc["abc2_unweighted_ml"], _ML_DECIMALS),
                "abc2_difference_pct": pct(abc["abc2_ml"]),
                "abc2": abc["abc2"],
            }
        measures = {**self._cache[key], "max_thickness_mm": None, "thickness_endpoints": None}
        if thickness:
            thick, ends, k = _thickness(mask, grid)
            measures["max_thickness_mm"] = _rnd(thick, _MM_DECIMALS)
            measures["thickness_endpoints"] = grid.to_lps(_ijk_points(ends, k, offset, grid))
        return measures

    def hematomas(self, mask: np.ndarray, offset: tuple[int, int, int], thickness: bool) -> list[dict]:
        """Connected components (3D, full connectivity) of a boolean crop, largest first."""
        components, n = ndimage.label(mask, structure=FULL_CONNECTIVITY)
        sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
        boxes = ndimage.find_objects(components)
        order = sorted(range(n), key=lambda c: (-sizes[c], c))
        result = []
        for rank, c in enumerate(order, start=1):
            box = boxes[c]
            sub = components[box] == c + 1
            sub_offset = tuple(o + s.start for o, s in zip(offset, box, strict=True))
            ijk = np.argwhere(sub).mean(axis=0) + np.array(sub_offset)  # (k, j, i)
            entry = {"id": rank, **self.measure(sub, sub_offset, thickness)}
            entry["centroid_lps"] = self.grid.to_lps(ijk[None, ::-1])[0]
            keys = ("id", "voxel_count", "volume_ml", "centroid_lps", "abc2_ml", "abc2_unweighted_ml",
                    "abc2_difference_pct", "abc2", "max_thickness_mm", "thickness_endpoints")
            result.append({key: entry[key] for key in keys})
        return result

    def entry(self, mask: np.ndarray | None, offset: tuple[int, int, int], thickness: bool) -> dict:
        """Measures of a whole subtype (or the union) and of each of its hematomas."""
        if mask is None or not mask.any():
            return {**_empty_measures(), "hematomas": []}
        hematomas = self.hematomas(mask, offset, thickness)
        if len(hematomas) == 1:  # the label is its only hematoma: reuse its measures
            measures = {k: v for k, v in hematomas[0].items() if k not in ("id", "centroid_lps")}
        else:
            measures = self.measure(mask, offset, thickness=False)
            if thickness:
                thickest = max(hematomas, key=lambda h: h["max_thickness_mm"])
                measures["max_thickness_mm"] = thickest["max_thickness_mm"]
                measures["thickness_endpoints"] = thickest["thickness_endpoints"]
        return {**measures, "hematomas": hematomas}


def _empty_measures() -> dict:
    return {"voxel_count": 0, "volume_ml": 0.0, "abc2_ml": None, "abc2_unweighted_ml": None,
            "abc2_difference_pct": None, "abc2": None, "max_thickness_mm": None, "thickness_endpoints": None}


def measure_labels(labels: np.ndarray, affine: np.ndarray) -> dict[str, dict]:
    """Volume (true voxel size), automatic ABC/2 and max thickness per subtype, per hematoma and in total.

    ``labels``: integer array ``[k, j, i]`` with the values of ``constants.SUBTYPES`` (0 = background);
    ``affine``: 4x4 IJK -> LPS (may be sheared). Returns ``{"IPH": {...}, ..., "EDH": {...}, "total": {...}}``
    of JSON-ready values (see the module docstring for the definitions).
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise InputError(f"The label map must be 3D, got shape {labels.shape}.")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"The label map must hold integer labels, got {labels.dtype}.")
    grid = _grid(affine)
    if labels.dtype != np.uint8 and labels.size and (labels.min() < 0 or labels.max() > 255):
        raise InputError("Label values must lie in 0..255.")
    labels = labels.astype(np.uint8, copy=False)
    boxes = ndimage.find_objects(labels) if labels.size else []

    measurer = _Measurer(grid)
    result: dict[str, dict] = {}
    present: list[str] = []
    for subtype in SUBTYPES:
        box = boxes[subtype.label - 1] if subtype.label <= len(boxes) else None
        mask = None if box is None else labels[box] == subtype.label
        offset = (0, 0, 0) if box is None else tuple(s.start for s in box)
        entry = measurer.entry(mask, offset, thickness=subtype.extra_axial)
        if entry["voxel_count"]:
            present.append(subtype.key)
        result[subtype.key] = {"label": subtype.label, **entry,
                               "abc2_clinically_applicable": subtype.key in ABC2_APPLICABLE_KEYS}

    used = [b for b in boxes if b is not None]
    if not used:
        total = measurer.entry(None, (0, 0, 0), thickness=False)
    else:
        union = tuple(slice(min(b[a].start for b in used), max(b[a].stop for b in used)) for a in range(3))
        total = measurer.entry(labels[union] > 0, tuple(s.start for s in union), thickness=False)
    total_applicable = bool(present) and set(present) <= ABC2_APPLICABLE_KEYS and total["voxel_count"] == sum(
        result[key]["voxel_count"] for key in present)
    result["total"] = {**total, "abc2_clinically_applicable": total_applicable}

    order = ("label", "voxel_count", "volume_ml", "abc2_ml", "abc2_unweighted_ml", "abc2_difference_pct",
             "abc2_clinically_applicable", "abc2", "max_thickness_mm", "thickness_endpoints", "hematomas")
    return {key: {k: entry[k] for k in order if k in entry} for key, entry in result.items()}
