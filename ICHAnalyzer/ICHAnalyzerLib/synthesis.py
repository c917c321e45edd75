"""Synthetic acute hemorrhage inserted into real head CT (training and evaluation data, never shipped data).

Every lesion is a soft occupancy field ``f`` in [0, 1] (partial volume: the slice thickness is supersampled,
edges ramp over about one voxel). The host keeps its own noise and texture: inside the lesion the smooth host
intensity is replaced by blood density, ``hu' = hu + f * (blood - smooth(hu))``. Voxels with ``f >= 0.5``
inside the intracranial mask carry the label, so the stated volume is the label's voxel count times the true
voxel volume.

Subtypes (labels from ``constants``):
- IPH (1): irregular 3D blobs (procedural, or real hematoma shapes from a lesion-mask bank), oedema rim.
- IVH (2): dependent layering (posterior, patient supine) or casting of a ventricle (CSF density, central).
- SAH (3): blood filling CSF spaces near the brain surface (sulci) or in the basal cisterns.
- SDH (4): crescents along the inner table, tapering over a long arc.
- EDH (5): biconvex lenses along the inner table, short and thick.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from .constants import SUBTYPE_BY_LABEL
from .volume import CTVolume

# Blood density ranges (HU) of acute hemorrhage per label, before partial volume.
BLOOD_HU = {1: (52.0, 85.0), 2: (50.0, 78.0), 3: (50.0, 75.0), 4: (52.0, 82.0), 5: (58.0, 88.0)}
# Extra-axial collections end where thinner than this (thinner tapers look like the normal inner table).
MIN_EXTRA_AXIAL_MM = 2.0
CSF_HU = (-5.0, 18.0)
NOISE_CLIP_HU = 25.0


def _smooth_soft_tissue(hu: np.ndarray, brain: np.ndarray, sigma: float = 1.2) -> np.ndarray:
    """In-plane Gaussian of the soft-tissue intensity inside the mask (normalised: bone and air excluded)."""
    weight = (brain & (hu > -30) & (hu < 110)).astype(np.float32)
    num = ndimage.gaussian_filter(hu * weight, sigma=(0, sigma, sigma))
    den = ndimage.gaussian_filter(weight, sigma=(0, sigma, sigma))
    return np.where(den > 1e-3, num / np.maximum(den, 1e-3), 35.0).astype(np.float32)


@dataclass
class InsertedLesion:
    """What was inserted: label, size (true voxel volume), density and where."""

    label: int
    key: str
    voxel_count: int
    volume_ml: float
    blood_hu: float
    center_ijk: tuple[float, float, float]
    shape: str


class _Frame:
    """Orthonormal millimetre frame of a (possibly sheared) grid: x along i, y along j, z along the normal."""

    def __init__(self, ct: CTVolume) -> None:
        a = ct.affine[:3, :3]
        self.dx, self.dy, self.dz = ct.spacing
        e0 = a[:, 0] / self.dx
        e1 = a[:, 1] / self.dy
        self.shear = np.array([a[:, 2] @ e0, a[:, 2] @ e1])  # in-plane shift per slice (tilt)
        self.lps_y = a[1]  # LPS y (posterior) per unit i, j, k
        self.origin_y = ct.affine[1, 3]

    def coords(self, box: tuple[slice, slice, slice], z_offset: float = 0.0) -> tuple[np.ndarray, ...]:
        """Frame coordinates (z, y, x) in mm of the voxels of ``box`` ([k, j, i] slices), broadcastable."""
        k = np.arange(box[0].start, box[0].stop, dtype=float)[:, None, None]
        j = np.arange(box[1].start, box[1].stop, dtype=float)[None, :, None]
        i = np.arange(box[2].start, box[2].stop, dtype=float)[None, None, :]
        x = i * self.dx + k * self.shear[0]
        y = j * self.dy + k * self.shear[1]
        z = (k + z_offset) * self.dz + 0 * i
        return z, y, x

    def to_frame(self, kji: np.ndarray) -> np.ndarray:
        k, j, i = kji
        return np.array([k * self.dz, j * self.dy + k * self.shear[1], i * self.dx + k * self.shear[0]])


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _box(center: np.ndarray, radius_mm: float, frame: _Frame, shape: tuple[int, ...]) -> tuple[slice, ...]:
    k, j, i = center
    rk = int(np.ceil(radius_mm / frame.dz)) + 1
    rj = int(np.ceil((radius_mm + abs(frame.shear[1]) * rk) / frame.dy)) + 1
    ri = int(np.ceil((radius_mm + abs(frame.shear[0]) * rk) / frame.dx)) + 1
    return (slice(max(0, int(k) - rk), min(shape[0], int(k) + rk + 1)),
            slice(max(0, int(j) - rj), min(shape[1], int(j) + rj + 1)),
            slice(max(0, int(i) - ri), min(shape[2], int(i) + ri + 1)))


def _z_offsets(frame: _Frame) -> np.ndarray:
    """Sub-positions through the slice thickness (partial volume along z)."""
    n = int(np.clip(round(frame.dz / 1.0), 1, 5))
    return (np.arange(n) + 0.5) / n - 0.5


def _soft(signed_mm: np.ndarray, width_mm: float) -> np.ndarray:
    """Occupancy from an (approximate) signed distance, negative inside, ramp of ``width_mm``."""
    return np.clip(0.5 - signed_mm / width_mm, 0.0, 1.0)


def _smooth_noise(shape: tuple[int, ...], rng: np.random.Generator, sigma: float, amp: float) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.normal(size=shape), sigma)
    return amp * n / (n.std() + 1e-6)


def _distance_inside(brain: np.ndarray, frame: _Frame) -> np.ndarray:
    """In-plane distance (mm) from each intracranial voxel to the outside of the mask, slice by slice."""
    out = np.zeros(brain.shape, np.float32)
    for k in np.flatnonzero(brain.any(axis=(1, 2))):
        padded = np.pad(brain[k], 1)
        out[k] = ndimage.distance_transform_edt(padded, sampling=(frame.dy, frame.dx))[1:-1, 1:-1]
    return out


# ----------------------------------------------------------------------------------------------- shapes
@lru_cache(maxsize=2)
def load_shape_bank(path: str, label: int = 1, min_voxels: int = 800) -> tuple[np.ndarray, ...]:
    """Real lesion shapes (1 mm isotropic occupancy crops) of ``label`` from a lesion mask (NIfTI)."""
    import nibabel as nib

    seg = np.asarray(nib.load(path).dataobj).astype(np.int16)
    comp, n = ndimage.label(seg == label)
    shapes = []
    for idx, sl in enumerate(ndimage.find_objects(comp), start=1):
        crop = comp[sl] == idx
        if crop.sum() >= min_voxels:
            shapes.append(np.pad(crop.astype(np.float32), 3))
    return tuple(shapes)


def _iph_field(ct: CTVolume, frame: _Frame, center: np.ndarray, volume_ml: float, rng: np.random.Generator,
               shape_bank: tuple[np.ndarray, ...] | None) -> tuple[np.ndarray, np.ndarray, tuple, str]:
    """Occupancy of an IPH and of its oedema rim (both soft) within a box around ``center``."""
    c = frame.to_frame(center)
    rot = _random_rotation(rng)
    if shape_bank and rng.random() < 0.4:
        shape = shape_bank[int(rng.integers(len(shape_bank)))]
        scale = (volume_ml * 1000.0 / shape.sum()) ** (1 / 3)
        half = np.array(shape.shape) / 2.0
        radius = float(np.linalg.norm(half) * scale) + 10
        box = _box(center, radius, frame, ct.shape)
        occ = np.zeros([s.stop - s.start for s in box], np.float32)
        offs = _z_offsets(frame)
        for dzo in offs:
            z, y, x = np.broadcast_arrays(*frame.coords(box, dzo))
            p = np.stack([z - c[0], y - c[1], x - c[2]], -1) @ rot / scale + half
            occ += ndimage.map_coordinates(shape, p.reshape(-1, 3).T, order=1, cval=0.0).reshape(occ.shape)
        occ /= len(offs)
        # sharpen the interpolated occupancy back to a one-voxel ramp
        occ = np.clip((occ - 0.5) * 1.5 + 0.5, 0, 1)
        rim_width = rng.uniform(2.0, 9.0)
        dist_out = ndimage.distance_transform_edt(occ < 0.5, sampling=(frame.dz, frame.dy, frame.dx))
        rim = np.clip(1.0 - dist_out / rim_width, 0, 1) * (occ < 0.5)
        return occ, rim.astype(np.float32), box, "bank"
    radii = rng.uniform(0.6, 1.4, size=3)
    radii *= (volume_ml * 1000.0 * 3 / (4 * np.pi) / radii.prod()) ** (1 / 3)
    rim_width = rng.uniform(2.0, 9.0)
    box = _box(center, radii.max() * 1.5 + rim_width + 4, frame, ct.shape)
    freqs = rng.normal(size=(6, 3)) * 2.0
    phases = rng.uniform(0, 2 * np.pi, 6)
    weights = rng.uniform(0.04, 0.12, 6)
    occ = np.zeros([s.stop - s.start for s in box], np.float32)
    rim = np.zeros_like(occ)
    mean_r = float(radii.mean())
    offs = _z_offsets(frame)
    for dzo in offs:
        z, y, x = frame.coords(box, dzo)
        p = np.stack(np.broadcast_arrays(z - c[0], y - c[1], x - c[2]), -1) @ rot
        q = p / radii
        rho = np.linalg.norm(q, axis=-1)
        u = q / np.maximum(rho[..., None], 1e-6)
        bump = sum(w * np.cos(u @ f + ph) for w, f, ph in zip(weights, freqs, phases, strict=True))
        signed = (rho / (1.0 + bump) - 1.0) * mean_r
        occ += _soft(signed, frame.dx)
        rim += np.clip(1.0 - np.maximum(signed, 0) / rim_width, 0, 1) * (signed > 0)
    return occ / len(offs), rim / len(offs), box, "procedural"


def _pick(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return None
    return np.array(np.unravel_index(idx[int(rng.integers(idx.size))], mask.shape), dtype=float)


def _supratentorial(brain: np.ndarray, lo: float = 0.3, hi: float = 0.9) -> np.ndarray:
    """Slices between fractions ``lo`` and ``hi`` of the brain's slice extent (bottom to top)."""
    ks = np.flatnonzero(brain.any(axis=(1, 2)))
    sel = np.zeros(brain.shape[0], bool)
    if ks.size:
        a, b = ks[0] + lo * (ks[-1] - ks[0]), ks[0] + hi * (ks[-1] - ks[0])
        sel[int(np.ceil(a)):int(np.floor(b)) + 1] = True
    return sel


def _central(brain: np.ndarray, frame: _Frame, fraction: float) -> np.ndarray:
    """Voxels whose in-plane distance to the brain's centre is below ``fraction`` of its radius, per slice."""
    out = np.zeros(brain.shape, bool)
    jj, ii = np.mgrid[:brain.shape[1], :brain.shape[2]]
    for k in np.flatnonzero(brain.any(axis=(1, 2))):
        cj, ci = ndimage.center_of_mass(brain[k])
        area = brain[k].sum() * frame.dx * frame.dy
        r = np.sqrt(area / np.pi)
        out[k] = np.hypot((jj - cj) * frame.dy, (ii - ci) * frame.dx) < fraction * r
    return out


# ----------------------------------------------------------------------------------------------- insertion
def insert_hemorrhage(ct: CTVolume, brain: np.ndarray, label: int, rng: np.random.Generator,
                      labels: np.ndarray | None = None, volume_ml: float | None = None,
                      shape_bank: tuple[np.ndarray, ...] | None = None,
                      distance_mm: np.ndarray | None = None) -> tuple[CTVolume, np.ndarray, InsertedLesion]:
    """Insert one hemorrhage of ``label`` (1..5) into a copy of ``ct``; returns (ct', labels', lesion).

    ``volume_ml`` sets the target size of IPH (others vary their own size); the lesion's stated
    ``volume_ml`` is always the label's voxel count times the true voxel volume.
    ``distance_mm`` (optional cache of the distance to the mask's outside) speeds up repeated calls.
    Raises ``ValueError`` when the host offers no place for this subtype.
    """
    if label not in SUBTYPE_BY_LABEL:
        raise ValueError(f"unknown label {label}")
    brain = brain.astype(bool)
    frame = _Frame(ct)
    hu = ct.hu.astype(np.float32)
    out_labels = np.zeros(ct.shape, np.uint8) if labels is None else labels.copy()
    dist = _distance_inside(brain, frame) if distance_mm is None else distance_mm
    occ_full = np.zeros(ct.shape, np.float32)
    rim_full = None
    shape_name = label and SUBTYPE_BY_LABEL[label].key
    smooth_hu = _smooth_soft_tissue(hu, brain)
    supra = _supratentorial(brain)[:, None, None]

    if label == 1:
        vol = float(volume_ml if volume_ml is not None else np.exp(rng.uniform(np.log(0.5), np.log(80.0))))
        r_eq = (vol * 3000.0 / (4 * np.pi)) ** (1 / 3)
        parenchyma = (dist > r_eq * 0.6 + 3) & (smooth_hu > 20) & (smooth_hu < 45) & _supratentorial(
            brain, 0.15, 0.92)[:, None, None]
        center = _pick(parenchyma, rng)
        if center is None:
            raise ValueError("no parenchyma deep enough for this IPH")
        occ, rim, box, shape_name = _iph_field(ct, frame, center, vol, rng, shape_bank)
        occ_full[box] = occ
        rim_full = np.zeros(ct.shape, np.float32)
        rim_full[box] = rim
    elif label == 2:
        csf = brain & (smooth_hu > CSF_HU[0]) & (smooth_hu < CSF_HU[1]) & (dist > 15)
        csf &= _central(brain, frame, 0.45)
        csf = ndimage.binary_opening(csf, structure=np.ones((1, 2, 2)))
        comp, n = ndimage.label(csf)
        if n == 0:
            raise ValueError("no ventricle found")
        sizes = ndimage.sum(csf, comp, range(1, n + 1)) * ct.voxel_volume_mm3 / 1000.0
        candidates = [c + 1 for c in np.flatnonzero(sizes > 1.0)] or [int(np.argmax(sizes)) + 1]
        vent = comp == candidates[int(rng.integers(len(candidates)))]
        kk, jj, ii = np.nonzero(vent)
        post = ct.affine[1, 0] * ii + ct.affine[1, 1] * jj + ct.affine[1, 2] * kk  # LPS y: larger = posterior
        fill = rng.uniform(0.25, 1.0)
        sel = post >= np.quantile(post, 1.0 - fill)
        region = np.zeros(ct.shape, bool)
        region[kk[sel], jj[sel], ii[sel]] = True
        occ_full = ndimage.gaussian_filter(region.astype(np.float32), sigma=(0.3, 0.6, 0.6))
        occ_full = np.clip((occ_full - 0.5) * 1.3 + 0.5, 0, 1)
        center = np.array([kk[sel].mean(), jj[sel].mean(), ii[sel].mean()])
        shape_name = "layering" if fill < 0.8 else "cast"
    elif label == 3:
        near_surface = (dist < 14) & supra
        cisterns = _central(brain, frame, 0.35) & _supratentorial(brain, 0.28, 0.5)[:, None, None]
        csf = brain & (smooth_hu > CSF_HU[0]) & (smooth_hu < CSF_HU[1]) & (dist > 1.5)
        where = near_surface if rng.random() < 0.7 else cisterns
        center = _pick(csf & where, rng)
        if center is None:
            raise ValueError("no CSF space found for SAH")
        extent = rng.uniform(15.0, 40.0)
        box = _box(center, extent + 2, frame, ct.shape)
        c = frame.to_frame(center)
        z, y, x = frame.coords(box)
        r = np.sqrt(((z - c[0]) / 0.7) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2)
        region = csf[box] & (r < extent * (1 + _smooth_noise(r.shape, rng, 3, 0.15)))
        region = ndimage.binary_dilation(region, structure=np.ones((1, 3, 3))) & brain[box]
        occ = ndimage.gaussian_filter(region.astype(np.float32), sigma=(0.3, 0.5, 0.5))
        occ_full[box] = np.clip((occ - 0.5) * 1.3 + 0.5, 0, 1) * rng.uniform(0.75, 1.0)
        shape_name = "cisternal" if where is cisterns else "sulcal"
    else:  # 4 SDH, 5 EDH along the inner table
        edge = brain & (dist < 2.0) & supra & ~_central(brain, frame, 0.55)
        center = _pick(edge, rng)
        if center is None:
            raise ValueError("no inner-table surface found")
        if label == 4:
            arc, thick = rng.uniform(35.0, 80.0), rng.uniform(4.0, 14.0)
        else:
            arc, thick = rng.uniform(18.0, 40.0), rng.uniform(6.0, 20.0)
        box = _box(center, arc + 2, frame, ct.shape)
        c = frame.to_frame(center)
        z, y, x = frame.coords(box)
        r = np.sqrt((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2)
        t = np.clip(1.0 - (r / arc) ** 2, 0.0, 1.0)
        profile = thick * (t if label == 4 else np.sqrt(t))
        signed = dist[box] - profile
        signed = np.where(profile >= MIN_EXTRA_AXIAL_MM, signed, 10.0)
        occ_full[box] = _soft(signed, frame.dx) * brain[box]
        shape_name = "crescent" if label == 4 else "lens"

    occ_full *= brain
    lesion_mask = occ_full >= 0.5
    if not lesion_mask.any():
        raise ValueError("lesion too small for this grid")
    blood = float(rng.uniform(*BLOOD_HU[label]))
    heterogeneity = _smooth_noise(ct.shape, rng, 2.5, rng.uniform(1.5, 4.0)) if label in (1, 4, 5) else 0.0
    # keep the host's own noise (residual from its smooth soft-tissue intensity), bounded so that no bone or
    # air edge leaks into the lesion
    residual = np.clip(hu - smooth_hu, -NOISE_CLIP_HU, NOISE_CLIP_HU)
    delta = occ_full * (blood + heterogeneity + residual - hu)
    if rim_full is not None:
        oedema = rng.uniform(4.0, 14.0)
        rim_full *= brain & (smooth_hu > 15) & (smooth_hu < 50) & ~lesion_mask
        delta -= rim_full * oedema
    hu = hu + delta
    out_labels[lesion_mask] = label
    count = int(lesion_mask.sum())
    new_ct = CTVolume(hu=np.round(hu).astype(np.int16), affine=ct.affine.copy(), source=ct.source,
                      series_uid=ct.series_uid, input_slices=ct.input_slices, resampling=ct.resampling,
                      warnings=list(ct.warnings))
    lesion = InsertedLesion(label=label, key=SUBTYPE_BY_LABEL[label].key, voxel_count=count,
                            volume_ml=count * ct.voxel_volume_mm3 / 1000.0, blood_hu=blood,
                            center_ijk=(float(center[2]), float(center[1]), float(center[0])),
                            shape=shape_name)
    return new_ct, out_labels, lesion


def synthesize_case(ct: CTVolume, brain: np.ndarray, rng: np.random.Generator,
                    subtypes: list[int] | None = None, max_tries: int = 5,
                    shape_bank: tuple[np.ndarray, ...] | None = None
                    ) -> tuple[CTVolume, np.ndarray, list[InsertedLesion]]:
    """Insert one hemorrhage per entry of ``subtypes`` (default: 1-3 random subtypes); skips impossible ones.
    """
    if subtypes is None:
        subtypes = list(rng.choice([1, 2, 3, 4, 5], size=int(rng.integers(1, 4)), replace=False))
    labels = np.zeros(ct.shape, np.uint8)
    dist = _distance_inside(brain.astype(bool), _Frame(ct))
    lesions: list[InsertedLesion] = []
    for label in subtypes:
        for _ in range(max_tries):
            try:
                ct, labels, lesion = insert_hemorrhage(ct, brain, int(label), rng, labels=labels,
                                                       shape_bank=shape_bank, distance_mm=dist)
            except ValueError:
                continue
            lesions.append(lesion)
            break
    # a later lesion may overwrite an earlier one: restate volumes from the final label map
    for lesion in lesions:
        lesion.voxel_count = int((labels == lesion.label).sum())
        lesion.volume_ml = lesion.voxel_count * ct.voxel_volume_mm3 / 1000.0
    return ct, labels, lesions


def default_shape_bank() -> tuple[np.ndarray, ...] | None:
    """Real IPH shapes from ``$ICH_SHARED_DIR`` or the repository's ``../shared`` (development), else None."""
    import os

    root = Path(os.environ.get("ICH_SHARED_DIR", Path(__file__).resolve().parents[3] / "shared"))
    path = root / "data" / "lesion-shapes" / "blast-ct_scan_0_segmentation.nii.gz"
    return load_shape_bank(str(path)) if path.exists() else None
