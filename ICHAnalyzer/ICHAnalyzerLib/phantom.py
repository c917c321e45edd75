"""Built-in synthetic head CT with hemorrhages of known volume (``ichanalyzer demo`` and tests).

Everything is made here from analytic shapes defined in physical LPS space (mm, head centre at the
origin), then rasterized at the voxel centres of the grid, so a tilted (sheared) grid samples the same
physical objects. The head: scalp, skull (outer table, diploe, inner table), a thin CSF layer, cortex
(grey ~38 HU), white matter (~28 HU), two lateral ventricles and a third ventricle (CSF ~5 HU). The five
hemorrhages (labels from ``constants``) have closed-form volumes:

- IPH: ellipsoid in the right hemisphere with an oedema rim (18 HU, not labelled);
- IVH: blood layering in the dependent (posterior, patient supine) part of the left lateral ventricle,
  i.e. an ellipsoid cap;
- SAH: thin sheet in the anterior interhemispheric fissure (flat ellipsoid);
- SDH: crescent along the left inner table: inner-table ellipsoid minus a larger, shifted ellipsoid
  with the same axes ratio (sphere-sphere lens formula in normalized coordinates);
- EDH: biconvex lens (intersection of two equal spheres) against the right frontotemporal inner table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .constants import SUBTYPE_BY_KEY
from .volume import CTVolume

# Ellipsoid semi-axes (x: right-left, y: anterior-posterior, z: inferior-superior), mm.
INNER_TABLE = np.array([62.0, 80.0, 62.0])  # intracranial cavity
SKULL_THICKNESS = 6.0
SCALP_THICKNESS = 5.0
CSF_LAYER = 2.0
CORTEX = 4.0
HU = {
    "air": -1000.0, "scalp": 30.0, "outer_table": 1500.0, "diploe": 900.0, "inner_table": 1400.0,
    "csf": 5.0, "grey": 38.0, "white": 28.0, "oedema": 18.0,
    "IPH": 68.0, "IVH": 60.0, "SAH": 58.0, "SDH": 64.0, "EDH": 72.0,
}
NOISE_HU = 5.0
# Lateral ventricles (left is +x in LPS) and third ventricle: centre, semi-axes.
LATERAL_VENTRICLE = (np.array([13.0, 2.0, 12.0]), np.array([7.0, 28.0, 12.0]))
THIRD_VENTRICLE = (np.array([0.0, 2.0, -4.0]), np.array([2.5, 12.0, 8.0]))


@dataclass
class Phantom:
    """A synthetic head CT, its hemorrhage label map and the analytic truth."""

    ct: CTVolume
    labels: np.ndarray  # uint8 [k, j, i], labels of constants.SUBTYPES
    true_volumes_ml: dict[str, float]  # by subtype key (IPH, IVH, SAH, SDH, EDH)
    intracranial_volume_ml: float  # inner-table ellipsoid
    description: str


Coords = tuple[np.ndarray, np.ndarray, np.ndarray]  # LPS x, y, z of the voxel centres, each [k, j, i]


def _grid_affine(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], tilt_deg: float
) -> np.ndarray:
    """IJK -> LPS affine centred on the origin; with tilt the slice planes lean about the x axis and the
    slice step runs along the table (z), like a gantry-tilted acquisition; plane distance stays dz."""
    dx, dy, dz = spacing
    t = np.radians(tilt_deg)
    affine = np.eye(4)
    affine[:3, 0] = [dx, 0.0, 0.0]
    affine[:3, 1] = [0.0, dy * np.cos(t), dy * np.sin(t)]
    affine[:3, 2] = [0.0, 0.0, dz / np.cos(t)]
    centre = (np.array(shape[::-1], float) - 1.0) / 2.0  # (i, j, k)
    affine[:3, 3] = -affine[:3, :3] @ centre
    return affine


def _ellipsoid(p: Coords, centre: np.ndarray, semi: np.ndarray) -> np.ndarray:
    """Voxels whose centre (coordinate arrays ``p`` = x, y, z) lies in the axis-aligned ellipsoid."""
    total = np.zeros(p[0].shape, np.float32)
    for axis in range(3):
        q = p[axis] - np.float32(centre[axis])
        q *= np.float32(1.0 / semi[axis])
        q *= q
        total += q
    return total <= 1.0


def _voxel_centres(shape: tuple[int, int, int], affine: np.ndarray) -> Coords:
    """LPS x, y, z of every voxel centre, each a float32 array ``[k, j, i]`` (broadcast sums)."""
    nk, nj, ni = shape
    i = np.arange(ni, dtype=np.float32)[None, None, :]
    j = np.arange(nj, dtype=np.float32)[None, :, None]
    k = np.arange(nk, dtype=np.float32)[:, None, None]
    a = affine.astype(np.float32)
    return tuple(a[r, 0] * i + a[r, 1] * j + a[r, 2] * k + a[r, 3] for r in range(3))  # type: ignore[return-value]


def _ellipsoid_volume(semi: np.ndarray) -> float:
    return float(4.0 / 3.0 * np.pi * np.prod(semi))


def _sphere_intersection_volume(r1: float, r2: float, d: float) -> float:
    """Volume of the intersection of two spheres of radii r1, r2 whose centres are d apart."""
    if d >= r1 + r2:
        return 0.0
    if d <= abs(r1 - r2):
        return 4.0 / 3.0 * np.pi * min(r1, r2) ** 3
    cap = d**2 + 2 * d * r1 - 3 * r1**2 + 2 * d * r2 + 6 * r1 * r2 - 3 * r2**2
    return float(np.pi * (r1 + r2 - d) ** 2 * cap / (12.0 * d))


def _surface_point(direction: np.ndarray, semi: np.ndarray) -> np.ndarray:
    """Point where the ray from the origin along ``direction`` leaves the ellipsoid ``semi``."""
    u = direction / np.linalg.norm(direction)
    return u / np.sqrt(np.sum((u / semi) ** 2))


def make_phantom(
    seed: int = 0,
    tilt_deg: float = 0.0,
    shape: tuple[int, int, int] = (32, 256, 256),
    spacing: tuple[float, float, float] = (0.9, 0.9, 5.0),
) -> Phantom:
    """Synthetic head CT ``[k, j, i]`` (``shape``) with ``spacing`` = (dx, dy, plane distance) mm.

    ``seed`` sets the noise and small jitters of the hemorrhages' positions and sizes (+-3 mm, +-10%);
    the same seed gives the same physical objects at any ``tilt_deg``.
    """
    rng = np.random.default_rng(seed)
    affine = _grid_affine(shape, spacing, tilt_deg)
    p = _voxel_centres(shape, affine)

    def jitter_mm() -> np.ndarray:
        return rng.uniform(-3.0, 3.0, 3)

    def scale() -> float:
        return float(rng.uniform(0.9, 1.1))

    origin = np.zeros(3)
    inner = INNER_TABLE
    hu = np.full(shape, HU["air"], np.float32)
    hu[_ellipsoid(p, origin, inner + SKULL_THICKNESS + SCALP_THICKNESS)] = HU["scalp"]
    hu[_ellipsoid(p, origin, inner + SKULL_THICKNESS)] = HU["outer_table"]
    hu[_ellipsoid(p, origin, inner + SKULL_THICKNESS - 1.5)] = HU["diploe"]
    hu[_ellipsoid(p, origin, inner + 1.5)] = HU["inner_table"]
    hu[_ellipsoid(p, origin, inner)] = HU["csf"]
    hu[_ellipsoid(p, origin, inner - CSF_LAYER)] = HU["grey"]
    hu[_ellipsoid(p, origin, inner - CSF_LAYER - CORTEX)] = HU["white"]
    # Central grey nuclei (basal ganglia / thalami), a bit denser than white matter.
    for side in (-1.0, 1.0):
        hu[_ellipsoid(p, np.array([side * 20.0, 5.0, -2.0]), np.array([9.0, 18.0, 10.0]))] = HU["grey"]
    lv_centre, lv_semi = LATERAL_VENTRICLE
    for side in (-1.0, 1.0):
        hu[_ellipsoid(p, lv_centre * [side, 1, 1], lv_semi)] = HU["csf"]
    hu[_ellipsoid(p, *THIRD_VENTRICLE)] = HU["csf"]

    labels = np.zeros(shape, np.uint8)
    volumes: dict[str, float] = {}
    notes: list[str] = []

    # IPH: ellipsoid in the right (-x) posterior hemisphere, with an oedema rim.
    iph_centre = np.array([-31.0, 22.0, 6.0]) + jitter_mm()
    iph_semi = np.array([10.0, 14.0, 12.0]) * scale()
    hu[_ellipsoid(p, iph_centre, iph_semi + 3.0)] = HU["oedema"]
    iph = _ellipsoid(p, iph_centre, iph_semi)
    volumes["IPH"] = _ellipsoid_volume(iph_semi)
    notes.append(f"IPH ellipsoid semi-axes {np.round(iph_semi, 1).tolist()} mm with 3 mm oedema rim")

    # IVH: blood in the posterior (dependent) part of the left lateral ventricle: ellipsoid cap.
    lv_left = lv_centre.copy()
    cap_height = 16.0 * scale()  # along y from the posterior pole
    cut_y = lv_left[1] + lv_semi[1] - cap_height
    ivh = _ellipsoid(p, lv_left, lv_semi) & (p[1] >= cut_y)
    a, b, c = lv_semi
    volumes["IVH"] = float(a * c / b**2 * np.pi * cap_height**2 * (3 * b - cap_height) / 3.0)
    notes.append(f"IVH layering in the left occipital horn, cap height {cap_height:.1f} mm")

    # SAH: thin sheet in the anterior interhemispheric fissure.
    sah_centre = np.array([0.0, -45.0, 18.0]) + jitter_mm() * [0.3, 1, 1]
    sah_semi = np.array([2.5, 20.0, 15.0]) * [1.0, scale(), scale()]
    sah = _ellipsoid(p, sah_centre, sah_semi)
    volumes["SAH"] = _ellipsoid_volume(sah_semi)
    notes.append(f"SAH sheet in the interhemispheric fissure, {2 * sah_semi[0]:.0f} mm thick")

    # SDH: crescent along the left (+x) inner table. In coordinates normalized by the inner-table
    # semi-axes the cavity is the unit sphere and the spared brain a sphere of radius R shifted by -s.
    sdh_thickness = 7.0 * scale()
    big_r = 1.5
    shift = big_r - 1.0 + sdh_thickness / inner[0]
    spared = _ellipsoid(p, np.array([-shift * inner[0], 0.0, 0.0]), big_r * inner)
    sdh = _ellipsoid(p, origin, inner) & ~spared
    unit_crescent = 4.0 / 3.0 * np.pi - _sphere_intersection_volume(1.0, big_r, shift)
    volumes["SDH"] = float(unit_crescent * np.prod(inner))
    notes.append(f"SDH crescent along the left convexity, {sdh_thickness:.1f} mm thick")

    # EDH: biconvex lens of two equal spheres, its outer face 1 mm inside the right frontotemporal table.
    edh_radius = 30.0 * scale()
    edh_thickness = 15.0 * scale()
    direction = np.array([-1.0, -0.45, 0.15]) + jitter_mm() * 0.02
    apex = _surface_point(direction, inner) * (1.0 - 1.0 / np.linalg.norm(_surface_point(direction, inner)))
    u = apex / np.linalg.norm(apex)
    lens_mid = apex - u * edh_thickness / 2.0
    half_gap = edh_radius - edh_thickness / 2.0  # each sphere centre lies this far beyond the lens middle
    edh = _ellipsoid(p, lens_mid - u * half_gap, np.full(3, edh_radius)) & _ellipsoid(
        p, lens_mid + u * half_gap, np.full(3, edh_radius)
    )
    volumes["EDH"] = _sphere_intersection_volume(edh_radius, edh_radius, 2.0 * half_gap)
    notes.append(f"EDH biconvex lens, {edh_thickness:.1f} mm thick, sphere radius {edh_radius:.1f} mm")

    for key, mask in (("SDH", sdh), ("EDH", edh), ("IPH", iph), ("IVH", ivh), ("SAH", sah)):
        labels[mask] = SUBTYPE_BY_KEY[key].label
        hu[mask] = HU[key]
    hu += rng.normal(0.0, NOISE_HU, shape).astype(np.float32)

    volumes_ml = {key: round(v / 1000.0, 4) for key, v in volumes.items()}
    icv_ml = _ellipsoid_volume(inner) / 1000.0
    description = (
        f"Synthetic head CT (seed {seed}, tilt {tilt_deg:g} deg, {shape[2]}x{shape[1]}x{shape[0]}, "
        f"{spacing[0]:g}x{spacing[1]:g}x{spacing[2]:g} mm): intracranial volume {icv_ml:.0f} mL; "
        + "; ".join(notes)
    )
    ct = CTVolume(hu=hu, affine=affine, source=f"phantom:seed={seed},tilt={tilt_deg:g}",
                  series_uid=f"phantom-{seed}-{tilt_deg:g}")
    return Phantom(ct=ct, labels=labels, true_volumes_ml=volumes_ml, intracranial_volume_ml=icv_ml,
                   description=description)
