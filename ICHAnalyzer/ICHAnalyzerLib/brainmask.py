"""Intracranial (brain) mask of a head CT: everything inside the inner table of the skull.

Method (scipy.ndimage only, per-slice in-plane operations so a sheared tilted grid is fine):

1. Full resolution: ``bone`` (HU >= ``BONE_HU``) and ``soft`` (``SOFT_HU`` range: CSF, brain, blood).
2. Coarse grid (~2 mm in-plane blocks): a block is bone if any voxel is bone (this also closes
   hairline gaps); the bone is thickened by ``GAP_CLOSE_MM`` so that small openings of the skull ring
   (foramina, thin temporal squama, partial volume at the vertex) close; per-slice hole filling of
   that ring gives the cranial cavity; blocks mostly made of soft tissue inside it are candidates.
3. In-plane erosion (``OPEN_MM``) cuts thin bridges (sinuses, skull-base fissures), the largest 3D
   component is the brain, dilation brings its outline back.
4. Full resolution again: soft-tissue voxels (not bone) within one block of that core, connected to it,
   with per-slice holes filled (calcified choroid plexus, pineal, falx).

Slices where the skull ring stays open (e.g. below the foramen magnum) get only what is connected to the
brain above and enclosed; the mask is conservative there.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError

from .volume import CTVolume

BONE_HU = 200.0  # skull (cortical bone > 500 HU; partial volume of the thin inner table ~200-400 HU)
SOFT_HU = (-20.0, 130.0)  # CSF (0-15), brain (20-45), blood (50-90), hyperdense clot; excludes fat, air
COARSE_MM = 2.0  # in-plane block size of the coarse grid
GAP_RADII_MM = (2.0, 4.0, 7.0)  # bone thickenings tried per slice: close skull-ring openings up to ~2x
LAST_RESORT_RADIUS_MM = 12.0  # only where none of the above encloses a cavity
OPEN_MM = 4.0  # in-plane erosion radius that separates the brain from what leaks through openings
MAX_BONE_HOLE_MM2 = 150.0  # calcifications (choroid plexus, pineal, falx) are smaller
MIN_SLICE_FRACTION = 0.02  # cavity smaller than this fraction of the slice's head area is ignored

# In-plane 8-connectivity only (per-slice operations on a 3D array).
_IN_PLANE = np.zeros((3, 3, 3), bool)
_IN_PLANE[1] = True
# 3D connectivity: 8 in-plane neighbours plus the voxel straight above/below.
_CONN_3D = _IN_PLANE.copy()
_CONN_3D[0, 1, 1] = _CONN_3D[2, 1, 1] = True
_CONN_FULL = np.ones((3, 3, 3), bool)  # the returned mask is one component in this sense (26-connected)


def _disk(radius_px: float) -> np.ndarray:
    """In-plane disk structuring element as a 3D array of one slice."""
    r = max(int(np.floor(radius_px)), 0)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return ((yy**2 + xx**2) <= radius_px**2 + 1e-6)[None]


def _fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Fill holes of every axial slice at once: background not connected in-plane to the slice border."""
    background, _ = ndi.label(~mask, structure=_IN_PLANE)
    border = np.concatenate(
        [background[:, 0, :].ravel(), background[:, -1, :].ravel(),
         background[:, :, 0].ravel(), background[:, :, -1].ravel()]
    )
    outside = np.zeros(int(background.max()) + 1, bool)
    outside[np.unique(border)] = True
    outside[0] = False
    return ~outside[background]


def _largest_component(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    labels, n = ndi.label(mask, structure=structure)
    if n == 0:
        return mask.copy()
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _block_reduce(arr: np.ndarray, f: int, how: str) -> np.ndarray:
    """In-plane block reduction of a bool array by factor ``f`` ('any' or 'mean')."""
    nk, nj, ni = arr.shape
    pj, pi = (-nj) % f, (-ni) % f
    if pj or pi:
        arr = np.pad(arr, ((0, 0), (0, pj), (0, pi)))
    blocks = arr.reshape(nk, arr.shape[1] // f, f, arr.shape[2] // f, f)
    if how == "any":
        return blocks.any(axis=(2, 4))
    return blocks.mean(axis=(2, 4), dtype=np.float32)


def _upsample(coarse: np.ndarray, f: int, shape: tuple[int, int, int]) -> np.ndarray:
    up = np.repeat(np.repeat(coarse, f, axis=1), f, axis=2)
    return up[:, : shape[1], : shape[2]]


def _convex_hull_mask(points_mask: np.ndarray) -> np.ndarray:
    """Filled convex hull of the True pixels of a 2D mask."""
    pts = np.argwhere(points_mask).astype(float)
    out = np.zeros(points_mask.shape, bool)
    if len(pts) < 3:
        return out
    try:
        hull = ConvexHull(pts)
    except QhullError:  # collinear points
        return out
    grid = np.indices(points_mask.shape).reshape(2, -1).T.astype(float)
    inside = np.all(grid @ hull.equations[:, :2].T + hull.equations[:, 2] <= 1e-9, axis=1)
    return inside.reshape(points_mask.shape)


def _enclosed(ring_bone: np.ndarray, bone_c: np.ndarray, radius_px: float) -> np.ndarray:
    """Per-slice holes of ``ring_bone`` thickened by ``radius_px``, grown back by it outside ``bone_c``."""
    grow = _disk(radius_px)
    ring = ndi.binary_dilation(ring_bone, structure=grow)
    holes = _fill_holes_per_slice(ring) & ~ring
    return ndi.binary_dilation(holes, structure=grow) & ~bone_c


def _cranial_cavity(bone_c: np.ndarray, head_c: np.ndarray, block_mm: float) -> np.ndarray:
    """Per-slice cavity enclosed by the skull ring (coarse grid), bridging openings of the ring.

    Union of: the holes of the ring thickened by each of ``GAP_RADII_MM`` (grown back by the same radius
    without entering bone), and the holes of the ring merged with the neighbouring slices' bone (an
    oblique or partial-volumed wall, e.g. on tilted series). Slices where none of these encloses at least
    ``MIN_SLICE_FRACTION`` of the head use ``LAST_RESORT_RADIUS_MM``; slices in between enclosed ones that
    stay open (partial-volumed orbital roofs) fall back to the ring's convex hull. What gets enclosed
    outside the skull (masticator space, neck) is cut off later by the opening and largest component.
    """
    min_area = MIN_SLICE_FRACTION * np.maximum(head_c.sum(axis=(1, 2)), 1)
    cavity = np.zeros(bone_c.shape, bool)
    for radius_mm in GAP_RADII_MM:
        cavity |= _enclosed(bone_c, bone_c, radius_mm / block_mm)
    done = cavity.sum(axis=(1, 2)) >= min_area
    if not done.all():
        wide = _enclosed(bone_c, bone_c, LAST_RESORT_RADIUS_MM / block_mm)
        rescued = ~done & (wide.sum(axis=(1, 2)) >= min_area)
        cavity[rescued] = wide[rescued]
        done |= rescued
    cavity[~done] = False
    if done.any():
        first, last = np.flatnonzero(done)[[0, -1]]
        for k in range(first + 1, last):
            if not done[k]:
                cavity[k] = _convex_hull_mask(bone_c[k]) & ~bone_c[k]
    return cavity


def brain_mask(ct: CTVolume) -> np.ndarray:
    """Boolean intracranial mask ``[k, j, i]`` (brain, CSF, ventricles, blood; no bone, scalp, air)."""
    hu = ct.hu
    dx, dy, _ = ct.spacing
    pixel = float(min(dx, dy))
    bone = hu >= BONE_HU
    soft = (hu >= SOFT_HU[0]) & (hu <= SOFT_HU[1])

    f = max(1, int(round(COARSE_MM / pixel)))
    block_mm = f * pixel
    bone_c = _block_reduce(bone, f, "any")
    soft_c = _block_reduce(soft, f, "mean") >= 0.5

    cavity = _cranial_cavity(bone_c, bone_c | soft_c, block_mm)

    candidate = cavity & soft_c
    # A region enclosed on the slices above and below is inside on this one too (its ring may be open
    # here: oblique petrous ridges or orbital roofs on tilted series).
    candidate[1:-1] |= candidate[:-2] & candidate[2:] & soft_c[1:-1] & ~bone_c[1:-1]
    opener = _disk(OPEN_MM / block_mm)
    core = ndi.binary_erosion(candidate, structure=opener)
    core = _largest_component(core, _CONN_3D)
    if not core.any():
        return np.zeros(hu.shape, bool)
    core = ndi.binary_dilation(core, structure=opener) & candidate

    # Full resolution: soft-tissue voxels within one block of the core, connected to it.
    near = _upsample(ndi.binary_dilation(core, structure=_disk(1.5)), f, hu.shape)
    fine = near & soft & ~bone
    labels, _ = ndi.label(fine, structure=_CONN_3D)
    core_up = _upsample(core, f, hu.shape)
    keep = np.unique(labels[core_up & fine])
    keep = keep[keep > 0]
    mask = np.isin(labels, keep) if keep.size else fine
    mask = _fill_small_holes(mask, bone, MAX_BONE_HOLE_MM2 / (dx * dy))
    return _largest_component(mask, _CONN_FULL)


def _fill_small_holes(mask: np.ndarray, bone: np.ndarray, max_bone_hole_px: float) -> np.ndarray:
    """Per-slice hole filling; bone inside a large hole (a bony island at the skull base) stays out."""
    holes = _fill_holes_per_slice(mask) & ~mask
    if not holes.any():
        return mask
    labels, n = ndi.label(holes, structure=_IN_PLANE)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    large = (sizes > max_bone_hole_px)[labels] & holes
    return mask | (holes & ~(large & bone))


def intracranial_volume_ml(mask: np.ndarray, ct: CTVolume) -> float:
    """Intracranial volume of ``mask`` in mL: voxel count x true voxel volume."""
    if mask.shape != ct.shape:
        raise ValueError(f"mask shape {mask.shape} does not match CT shape {ct.shape}")
    return float(np.count_nonzero(mask)) * ct.voxel_volume_mm3 / 1000.0
