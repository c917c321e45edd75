"""Intracranial (brain) mask of a head CT: everything inside the inner table of the skull.

Method (scipy.ndimage only; in-plane operations per slice, so a sheared gantry-tilted grid is fine):

1. Full resolution: ``bone`` (HU >= ``BONE_HU``) and ``soft`` (``SOFT_HU``: CSF, brain, blood).
2. Coarse grid (~2 mm in-plane blocks): a block is bone if any voxel is bone. Per slice, the holes of the
   skull ring thickened by ``GAP_RADII_MM`` (closing foramina, thin squama, partial-volumed walls) give the
   cranial cavity; wider closings only extend regions already enclosed or regions the neighbouring slices
   enclose (never new regions below the skull base); open slices between enclosed ones (orbital roofs)
   are bridged and bounded by their neighbours. Soft blocks inside are candidates; a region enclosed on
   the slices above and below is taken on a slice where its wall is open.
3. In-plane erosion (``OPEN_MM``) cuts thin bridges, the largest 3D component is the brain, dilation
   brings its outline back.
4. Full resolution, within one block of that core: soft-tissue voxels that are not bone, small in-plane
   pieces dropped, largest 26-connected component, per-slice holes filled (calcified choroid plexus,
   pineal, falx; not large bony islands), the spinal canal below the foramen magnum trimmed.

Known limits (docs/brainmask/README.md): slivers of orbital apex / ethmoid on open orbital-roof slices,
and the lowest posterior fossa on strongly tilted series where the ring stays open over several slices.
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
MIN_PIECE_MM2 = 100.0  # smaller in-plane pieces of the mask are dropped
MIN_SLICE_FRACTION = 0.02  # a cavity smaller than this fraction of the slice's head area is ignored
# Single-piece sections below this at the bottom of the mask are the spinal canal (canal with cord and CSF
# measured 6-9 cm^2 on the real series, obliquely cut on tilted ones); the posterior fossa above measures
# > 12 cm^2 or shows the two tonsils.
SPINAL_CANAL_MAX_MM2 = 1000.0

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


def _block_count(arr: np.ndarray, f: int) -> np.ndarray:
    """Number of True voxels in each in-plane ``f`` x ``f`` block (strided sums: fast on big arrays)."""
    nk, nj, ni = arr.shape
    pj, pi = (-nj) % f, (-ni) % f
    if pj or pi:
        arr = np.pad(arr, ((0, 0), (0, pj), (0, pi)))
    data = arr.view(np.uint8)
    rows = np.zeros((nk, data.shape[1], data.shape[2] // f), np.uint16)
    for q in range(f):
        rows += data[:, :, q::f]
    counts = np.zeros((nk, data.shape[1] // f, data.shape[2] // f), np.uint16)
    for q in range(f):
        counts += rows[:, q::f, :]
    return counts


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


def _extend(cavity: np.ndarray, wider: np.ndarray, support: np.ndarray) -> np.ndarray:
    """``cavity`` plus the in-plane components of ``wider`` that overlap it or lie mostly (>= half) on
    ``support`` (what the neighbouring slices enclose)."""
    labels, n = ndi.label(wider, structure=_IN_PLANE)
    if n == 0:
        return cavity
    keep = np.zeros(n + 1, bool)
    keep[np.unique(labels[cavity & wider])] = True
    size = np.bincount(labels.ravel(), minlength=n + 1)
    supported = np.bincount(labels[support & wider], minlength=n + 1)
    keep |= supported >= 0.5 * size
    keep[0] = False
    return cavity | keep[labels]


def _cranial_cavity(bone_c: np.ndarray, head_c: np.ndarray, block_mm: float) -> np.ndarray:
    """Per-slice cavity enclosed by the skull ring (coarse grid), bridging openings of the ring.

    The ring is thickened by each of ``GAP_RADII_MM``, its holes filled and grown back by the same radius
    without entering bone. On each slice the smallest radius that encloses at least ``MIN_SLICE_FRACTION``
    of the head's area gives the base regions; larger radii add regions that extend them (an opening of
    their wall) or lie mostly over what the slices above/below enclose at their base (an oblique wall on
    tilted series), never other new ones: regions enclosed only by wide bridging below the skull base
    (masticator space, nasopharynx) would otherwise join the brain through its thin floor. Slices
    between enclosed ones that stay open at every radius (partial-volumed orbital roofs) use
    ``LAST_RESORT_RADIUS_MM`` or else the ring's convex hull, bounded by the nearest enclosed slices.
    """
    min_area = MIN_SLICE_FRACTION * np.maximum(head_c.sum(axis=(1, 2)), 1)
    enclosed = [_enclosed(bone_c, bone_c, r / block_mm) for r in GAP_RADII_MM]
    big = np.stack([e.sum(axis=(1, 2)) >= min_area for e in enclosed])  # [radius, k]
    done = big.any(axis=0)
    first = np.argmax(big, axis=0)
    base = np.zeros(bone_c.shape, bool)
    for k in np.flatnonzero(done):
        base[k] = enclosed[first[k]][k]
    support = np.zeros(bone_c.shape, bool)
    support[1:] |= base[:-1]
    support[:-1] |= base[1:]
    cavity = base.copy()
    for r, wider in enumerate(enclosed):
        later = np.flatnonzero(done & (first < r))
        if later.size:
            cavity[later] = _extend(cavity[later], wider[later], support[later])
    if done.all() or not done.any():
        return cavity
    # Open slices: the widest bridging, else the ring's convex hull, bounded by what the nearest enclosed
    # slices below and above enclose (the brain's section changes little from one slice to the next).
    wide = _enclosed(bone_c, bone_c, LAST_RESORT_RADIUS_MM / block_mm)
    enclosed_k = np.flatnonzero(done)
    grow = _disk(1.5)
    for k in range(enclosed_k[0] + 1, enclosed_k[-1]):
        if done[k]:
            continue
        below = enclosed_k[enclosed_k < k][-1]
        above = enclosed_k[enclosed_k > k][0]
        bound = ndi.binary_dilation(cavity[below] | cavity[above], structure=grow[0])
        section = wide[k] if wide[k].sum() >= min_area[k] else _convex_hull_mask(bone_c[k]) & ~bone_c[k]
        cavity[k] = section & bound
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
    bone_c = _block_count(bone, f) > 0
    soft_c = _block_count(soft, f) >= f * f / 2.0

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

    # Full resolution, within the core's bounding box: soft-tissue voxels within one block of the core;
    # the largest 26-connected piece with its per-slice holes filled (calcifications) is the mask.
    near_c = ndi.binary_dilation(core, structure=_disk(1.5))
    ks, js, is_ = (np.flatnonzero(near_c.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
    k0, k1 = ks[0], ks[-1] + 1
    j0, j1 = js[0] * f, min((js[-1] + 1) * f, hu.shape[1])
    i0, i1 = is_[0] * f, min((is_[-1] + 1) * f, hu.shape[2])
    box = (slice(k0, k1), slice(j0, j1), slice(i0, i1))
    near = _upsample(near_c[k0:k1, js[0] : js[-1] + 1, is_[0] : is_[-1] + 1], f, (k1 - k0, j1 - j0, i1 - i0))
    fine = _drop_small_pieces(near & soft[box] & ~bone[box], MIN_PIECE_MM2 / (dx * dy))
    fine = _largest_component(fine, _CONN_FULL)
    mask = np.zeros(hu.shape, bool)
    mask[box] = _fill_small_holes(fine, bone[box], MAX_BONE_HOLE_MM2 / (dx * dy))
    _trim_spinal_canal(mask, dx * dy, superior_is_up=ct.slice_normal[2] >= 0)
    return mask


def _trim_spinal_canal(mask: np.ndarray, pixel_mm2: float, superior_is_up: bool) -> None:
    """Clear, in place, the lowest slices while their section is one canal-sized piece (spinal canal and
    cord down from the foramen magnum; the posterior fossa above is larger or splits into the tonsils)."""
    area_mm2 = mask.sum(axis=(1, 2)) * pixel_mm2
    order = np.flatnonzero(area_mm2 > 0)
    for k in order if superior_is_up else order[::-1]:
        if area_mm2[k] >= SPINAL_CANAL_MAX_MM2 or ndi.label(mask[k])[1] > 1:
            break
        mask[k] = False


def _drop_small_pieces(mask: np.ndarray, min_px: float) -> np.ndarray:
    """Remove in-plane pieces smaller than ``min_px`` (block-shaped slivers in orbits, foramina)."""
    labels, n = ndi.label(mask, structure=_IN_PLANE)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_px
    keep[0] = False
    return keep[labels]


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
