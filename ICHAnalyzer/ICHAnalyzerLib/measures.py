"""Clinical measures beyond volume: midline shift, hematoma location, ICH score (imaging parts).

All coordinates are DICOM patient coordinates (LPS, mm). Nothing is guessed: a measure that cannot be
made is null with a note saying why. Method and validation: docs/clinical-measures.md.

Midline shift
    The ideal midline is the mid-sagittal symmetry plane of the intracranial cavity (the brain mask):
    the plane about which the mask best matches its own mirror image (3 parameters: two angles and an
    offset, optimised on a 2 mm copy of the mask). Mass effect moves the brain but not the skull, so
    the cavity's plane stays where the falx is attached. The septum pellucidum is the thin tissue
    between the frontal horns / bodies of the lateral ventricles: along lines perpendicular to the
    ideal midline, CSF - tissue - CSF patterns near the midline give septum positions, searched where
    the template's septum region maps (atlas registration) and taken on the slice where the septum is
    longest. The shift is the distance from the ideal plane of the septum's most displaced part (75th
    percentile of the 5 mm median-filtered profile).

Location
    Hematoma voxels mapped through the affine template registration (``atlas``) into the BLAST-CT
    atlas: lobar / deep / infratentorial, side from the ideal midline, IPH touching IVH.

ICH score
    Hemphill et al. 2001, only when every part is known (GCS and age come from the caller).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from scipy import optimize

from .constants import SUBTYPE_BY_KEY, SUBTYPE_KEYS
from .errors import InputError
from .volume import CTVolume

SUBTYPE_LABEL = {key: SUBTYPE_BY_KEY[key].label for key in SUBTYPE_KEYS}

SYMMETRY_GRID_MM = 2.0  # isotropic grid for the symmetry-plane search
BAND_STRIDE = 6  # every 6th voxel of the mask surface shell (~15k points) enters the symmetry cost
CSF_MAX_HU = 16.0  # ventricular CSF (with partial volume) is below this; brain tissue is ~25-40 HU
CSF_MIN_HU = -15.0
SEPTUM_MAX_GAP_MM = 9.0  # tissue between the frontal horns wider than this is not a septum
SEPTUM_SEARCH_MM = 25.0  # septum searched within this distance of the ideal midline
VENTRICLE_MIN_DEPTH_MM = 6.0  # ventricles lie at least this deep inside the intracranial mask
VENTRICLE_MIN_AREA_MM2 = 15.0
PROFILE_STEP_MM = 0.25
SEPTUM_PERCENTILE = 75.0
LEVEL_RANGE_MM = 10.0
ROW_STEP_MM = 1.0
MIN_SEPTUM_ROWS = 6  # at least this many mm of septum along the midline
RELIABLE_MIN_LENGTH_MM = 8.0  # a shorter septum is reported but flagged unreliable
RELIABLE_MAX_ROUGHNESS_MM = 0.75


def _direction(yaw: float, roll: float) -> np.ndarray:
    """Unit normal of a near-sagittal plane: +L rotated by ``yaw`` about S and ``roll`` about P (radians)."""
    return np.array([math.cos(yaw) * math.cos(roll), math.sin(yaw) * math.cos(roll), math.sin(roll)])


def _mask_on_grid(ct: CTVolume, brain: np.ndarray, step_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The brain mask (as a fraction) on an LPS-aligned isotropic grid; returns (array [x, y, z], origin)."""
    dx, dy, _ = ct.spacing
    # in-plane block average first (cheap, keeps partial volume), then sample the LPS grid
    fi = max(1, int(round(step_mm / dx)))
    fj = max(1, int(round(step_mm / dy)))
    nk, nj, ni = brain.shape
    nj2, ni2 = nj // fj, ni // fi
    crop = brain[:, : nj2 * fj, : ni2 * fi].view(np.uint8)
    counts = np.add.reduceat(np.add.reduceat(crop, np.arange(0, nj2 * fj, fj), axis=1, dtype=np.uint16),
                             np.arange(0, ni2 * fi, fi), axis=2, dtype=np.uint16)
    small = counts.astype(np.float32) / (fi * fj)
    aff = ct.affine.copy()
    aff[:3, 0] *= fi
    aff[:3, 1] *= fj
    aff[:3, 3] = ct.affine[:3, 3] + ct.affine[:3, 0] * (fi - 1) / 2 + ct.affine[:3, 1] * (fj - 1) / 2
    idx = np.argwhere(small > 0.5)
    if len(idx) == 0:
        raise InputError(f"Intracranial region of {ct.source or 'the CT'} too small to find its midline")
    corners = idx[:, ::-1] @ aff[:3, :3].T + aff[:3, 3]  # (i, j, k) -> LPS
    lo = corners.min(axis=0) - 3 * step_mm
    hi = corners.max(axis=0) + 3 * step_mm
    shape = np.ceil((hi - lo) / step_mm).astype(int) + 1
    axes = [lo[d] + step_mm * np.arange(shape[d]) for d in range(3)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    ijk = (pts - aff[:3, 3]) @ np.linalg.inv(aff[:3, :3]).T
    vals = ndi.map_coordinates(small, [ijk[:, 2], ijk[:, 1], ijk[:, 0]], order=1, cval=0.0)
    return vals.reshape(shape).astype(np.float32), lo


def symmetry_plane(ct: CTVolume, brain: np.ndarray, step_mm: float = SYMMETRY_GRID_MM) -> dict[str, Any]:
    """Mid-sagittal symmetry plane of the intracranial mask: {"point", "normal", "residual"} (LPS)."""
    grid, origin = _mask_on_grid(ct, brain, step_mm)
    grid = ndi.gaussian_filter(grid, 1.0)
    # compare the mask with its mirror image where the mask changes (a shell around its surface)
    band = (grid > 0.05) & (grid < 0.95)
    idx_band = np.argwhere(band)[::BAND_STRIDE]  # a subset of the shell voxels is plenty
    pts = idx_band.astype(np.float64) * step_mm + origin
    vals = grid[tuple(idx_band.T)]
    centre = np.argwhere(grid > 0.5).mean(axis=0) * step_mm + origin

    def cost(params: np.ndarray) -> float:
        yaw_deg, roll_deg, offset = params
        n = _direction(math.radians(yaw_deg), math.radians(roll_deg))
        dist = (pts - centre) @ n - offset
        mirrored = pts - 2.0 * dist[:, None] * n
        idx = (mirrored - origin) / step_mm
        other = ndi.map_coordinates(grid, idx.T, order=1, cval=0.0)
        return float(np.mean((vals - other) ** 2))

    # coarse search over yaw (heads are often turned), then a local refinement
    best = min(
        (cost(np.array([float(a), 0.0, 0.0])), a) for a in range(-30, 31, 10)
    )
    start = np.array([float(best[1]), 0.0, 0.0])
    # parameters in degrees and mm: a 0.05 tolerance is far below what matters (0.05 mm)
    res = optimize.minimize(cost, start, method="Powell",
                            options={"xtol": 0.05, "ftol": 1e-4, "maxfev": 300})
    yaw_deg, roll_deg, offset = res.x
    n = _direction(math.radians(yaw_deg), math.radians(roll_deg))
    point = centre + offset * n
    return {"point": point, "normal": n, "residual": float(res.fun)}


def _slice_frame(ct: CTVolume, k: int, plane: dict, brain_k: np.ndarray) -> tuple | None:
    """In-slice frame on slice ``k``: origin on the ideal midline, ``u`` across it, ``v`` along it."""
    n = plane["normal"]
    ns = ct.slice_normal
    u = n - (n @ ns) * ns
    u /= np.linalg.norm(u)
    v = np.cross(ns, u)
    jj, ii = np.nonzero(brain_k)
    if len(ii) == 0:
        return None
    centre = ct.voxel_to_lps([ii.mean(), jj.mean(), k])[0]
    origin = centre - ((centre - plane["point"]) @ n) / (u @ n) * u
    return origin, u, v


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Half-open index ranges of consecutive True values."""
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _crossing(profile: np.ndarray, a: np.ndarray, inside: int, outside: int) -> float:
    """Sub-sample position where ``profile`` crosses CSF_MAX_HU between two neighbouring samples."""
    h0, h1 = profile[inside], profile[outside]
    t = 0.5 if h1 == h0 else float(np.clip((CSF_MAX_HU - h0) / (h1 - h0), 0.0, 1.0))
    return float(a[inside] + t * (a[outside] - a[inside]))


def ventricle_mask_2d(hu: np.ndarray, brain: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """CSF regions of one slice enclosed by brain (ventricles): not touching the brain's outer rim,
    which removes sulci, fissures, cisterns and cortical infarcts reaching the surface."""
    # on a ~1 mm copy: plenty for structures of >= 15 mm2, and 4x cheaper to label
    h = max(1, int(round(1.0 / spacing[0])))
    hu_h = hu[::h, ::h]
    brain_h = brain[::h, ::h]
    csf = (hu_h > CSF_MIN_HU) & (hu_h < CSF_MAX_HU) & brain_h
    labels, count = ndi.label(csf)
    if count == 0:
        return np.zeros(hu.shape, np.uint8)
    # depth below the intracranial surface on a ~2 mm copy (plenty for a 6 mm criterion)
    f = 2
    small = brain_h[::f, ::f]
    step = (spacing[0] * h * f, spacing[1] * h * f)
    depth = ndi.distance_transform_edt(small, sampling=step)
    rows, cols = np.nonzero(labels)
    depth_at = depth[np.minimum(rows // f, small.shape[0] - 1), np.minimum(cols // f, small.shape[1] - 1)]
    which = labels[rows, cols]
    shallowest = np.full(count + 1, np.inf)
    np.minimum.at(shallowest, which, depth_at)
    area = np.bincount(which, minlength=count + 1) * (spacing[0] * h) * (spacing[1] * h)
    keep = (shallowest >= VENTRICLE_MIN_DEPTH_MM) & (area >= VENTRICLE_MIN_AREA_MM2)
    keep[0] = False
    kept = keep[labels].astype(np.uint8)
    if h == 1:
        return kept
    full = np.repeat(np.repeat(kept, h, axis=0), h, axis=1)[: hu.shape[0], : hu.shape[1]]
    out = np.zeros(hu.shape, np.uint8)
    out[: full.shape[0], : full.shape[1]] = full
    return out


def septum_on_slice(ct: CTVolume, brain: np.ndarray, plane: dict, k: int,
                    prior_points: np.ndarray | None = None) -> dict | None:
    """Septum pellucidum positions on slice ``k``: rows along the midline with CSF-tissue-CSF patterns.

    ``prior_points`` (LPS): where the template's septum region maps; rows beyond its extent along the
    midline (+- ``PRIOR_MARGIN_MM``) are not searched (keeps the pineal region and the falx out).
    """
    brain_k = brain[k]
    frame = _slice_frame(ct, k, plane, brain_k)
    if frame is None:
        return None
    origin, u, v = frame
    dx, dy, _ = ct.spacing
    ventricles = ventricle_mask_2d(ct.hu[k], brain_k, (dy, dx))
    if not ventricles.any():
        return None
    a = np.arange(-SEPTUM_SEARCH_MM - 15.0, SEPTUM_SEARCH_MM + 15.0 + 1e-6, PROFILE_STEP_MM)
    b = np.arange(-90.0, 90.0 + 1e-6, ROW_STEP_MM)
    if prior_points is not None:
        along = (np.asarray(prior_points) - origin) @ v
        b = b[(b >= along.min() - PRIOR_MARGIN_MM) & (b <= along.max() + PRIOR_MARGIN_MM)]
        if len(b) == 0:
            return None
    pts = origin + a[None, :, None] * u + b[:, None, None] * v  # [row, sample, 3]
    ijk = ct.lps_to_voxel(pts.reshape(-1, 3))
    coords = [ijk[:, 1], ijk[:, 0]]
    shape = (len(b), len(a))
    hu = ndi.map_coordinates(ct.hu[k].astype(np.float32), coords, order=1, cval=-1000.0).reshape(shape)
    csf = ndi.map_coordinates(ventricles, coords, order=0, cval=0).reshape(shape).astype(bool)
    central_area = float(csf[:, np.abs(a) <= SEPTUM_SEARCH_MM].sum() * PROFILE_STEP_MM * ROW_STEP_MM)
    min_run = int(round(1.0 / PROFILE_STEP_MM))
    rows = []
    for r in range(len(b)):
        runs = [run for run in _runs(csf[r]) if run[1] - run[0] >= min_run]
        best = None
        for (_, e1), (s2, _) in zip(runs[:-1], runs[1:], strict=True):
            left_edge = _crossing(hu[r], a, e1 - 1, e1)
            right_edge = _crossing(hu[r], a, s2, s2 - 1)
            gap = right_edge - left_edge
            centre = 0.5 * (left_edge + right_edge)
            if not (0.0 < gap <= SEPTUM_MAX_GAP_MM and abs(centre) <= SEPTUM_SEARCH_MM):
                continue
            if best is None or abs(centre) < abs(best[0]):
                best = (centre, gap)
        if best is not None:
            rows.append((float(b[r]), best[0], best[1]))
    if not rows:
        return {"k": k, "rows": np.zeros((0, 3)), "ventricle_area_mm2": central_area}
    # the septum is one continuous structure: keep the longest chain of neighbouring rows
    chains: list[list[tuple[float, float, float]]] = [[rows[0]]]
    for row in rows[1:]:
        prev = chains[-1][-1]
        if row[0] - prev[0] <= 2.0 * ROW_STEP_MM and abs(row[1] - prev[1]) <= 1.5:
            chains[-1].append(row)
        else:
            chains.append([row])
    chain = max(chains, key=len)
    return {"k": k, "rows": np.array(chain), "origin": origin, "u": u, "v": v,
            "ventricle_area_mm2": central_area}


def septum_point(found: dict, plane: dict) -> tuple[np.ndarray, float, float]:
    """The septum's measured point on one slice: (point LPS, signed distance to the plane, roughness).

    The most displaced part of the septum, robustly: the ``SEPTUM_PERCENTILE`` percentile of |position|
    along the 5 mm median-filtered profile (a plain maximum would turn noise into shift on normal
    scans; the median would miss part of a focal, bowed shift). Roughness: median distance of the raw
    positions from the filtered profile (noise, not the septum's bowing).
    """
    rows = found["rows"]
    smooth = ndi.median_filter(rows[:, 1], size=5, mode="nearest")
    order = np.argsort(np.abs(smooth))
    pick = int(order[min(len(order) - 1, int(round(SEPTUM_PERCENTILE / 100.0 * (len(order) - 1))))])
    point = found["origin"] + smooth[pick] * found["u"] + rows[pick, 0] * found["v"]
    signed = float((point - plane["point"]) @ plane["normal"])
    roughness = float(np.median(np.abs(rows[:, 1] - smooth)))
    return point, signed, roughness


# the septum pellucidum region of MNI space (RAS mm): between the frontal horns and bodies of the lateral
# ventricles, from the genu of the corpus callosum to the fornix, above the third ventricle
SEPTUM_BOX_MNI = ((-3.0, 3.0), (-20.0, 32.0), (0.0, 30.0))
PRIOR_MARGIN_MM = 5.0


def septum_prior(ct: CTVolume, registration: Any) -> np.ndarray:
    """The template's septum region (``SEPTUM_BOX_MNI``) mapped into the CT: points (LPS mm)."""
    (x0, x1), (y0, y1), (z0, z1) = SEPTUM_BOX_MNI
    x, y, z = np.meshgrid(np.linspace(x0, x1, 3), np.arange(y0, y1 + 0.1, 2.5), np.arange(z0, z1 + 0.1, 2.5),
                          indexing="ij")
    template_lps = np.stack([-x.ravel(), -y.ravel(), z.ravel()], axis=1)  # MNI RAS -> LPS
    return registration.to_ct(template_lps)


def septum_level_slices(ct: CTVolume, registration: Any) -> set[int]:
    """Slices crossing the template's septum region mapped into the CT (:func:`septum_prior`)."""
    k = np.rint(ct.lps_to_voxel(septum_prior(ct, registration))[:, 2]).astype(int)
    return {int(v) for v in np.unique(k) if 0 <= v < ct.shape[0]}


def midline_shift(ct: CTVolume, brain: np.ndarray, registration: Any = None,
                  plane: dict | None = None) -> dict[str, Any]:
    """Midline shift at the septum pellucidum against the intracranial symmetry plane (see module doc).

    With a template ``registration`` (atlas.Registration) the septum is searched on the slices where
    the template's septum region maps; without it, near the slice with the most enclosed central CSF.
    ``plane``: the ideal midline if already computed (:func:`symmetry_plane`).
    """
    method = ("ideal midline: mirror-symmetry plane of the intracranial mask; septum pellucidum: tissue "
              "between the lateral ventricles (CSF) on the axial slice where it is longest")
    result: dict[str, Any] = {"shift_mm": None, "signed_shift_mm": None, "direction": None,
                              "ideal_midline": None, "septum_point_lps": None, "line_endpoints": None,
                              "slice_index": None, "method": method, "reliable": False, "note": None}
    if brain.sum() == 0:
        result["note"] = "no brain mask: midline shift not measured"
        return result
    if plane is None:
        plane = symmetry_plane(ct, brain)
    result["ideal_midline"] = {"point_lps": _r(plane["point"]), "normal_lps": _r(plane["normal"], 5)}
    area = brain.sum(axis=(1, 2))
    top = np.flatnonzero(area > 0.5 * area.max())
    slices = range(int(top.min()), int(top.max()) + 1)
    prior = None
    if registration is not None:
        prior = septum_prior(ct, registration)
        slices = sorted(septum_level_slices(ct, registration))
        result["method"] += " within the template's septum region mapped into the scan"
    else:
        result["method"] += " near the slice with the most enclosed CSF near the midline (no template)"
    candidates = [f for k in slices if (f := septum_on_slice(ct, brain, plane, k, prior)) is not None]
    best = None
    if candidates and registration is not None:
        best = max(candidates, key=lambda f: len(f["rows"]))
    elif candidates:
        # the level of the lateral ventricles: the slice with the most enclosed CSF near the midline;
        # the septum is taken on the slice within LEVEL_RANGE_MM of it where it is longest
        level = max(candidates, key=lambda f: f["ventricle_area_mm2"])
        dz = ct.spacing[2]
        near = [f for f in candidates if abs(f["k"] - level["k"]) * dz <= LEVEL_RANGE_MM + 1e-6]
        best = max(near, key=lambda f: len(f["rows"]))
    if best is None or len(best["rows"]) < MIN_SEPTUM_ROWS:
        result["note"] = ("septum pellucidum not found (no CSF-tissue-CSF pattern between the lateral "
                          "ventricles near the midline): ventricles effaced, slit-like or not in the scan")
        return result
    point, signed, roughness = septum_point(best, plane)
    foot = point - signed * plane["normal"]
    length = float(len(best["rows"]) * ROW_STEP_MM)
    result.update({
        "shift_mm": round(abs(signed), 2),
        "signed_shift_mm": round(signed, 2),
        "direction": "none" if abs(signed) < 0.05 else ("toward patient left" if signed > 0
                                                        else "toward patient right"),
        "septum_point_lps": _r(point),
        "line_endpoints": [_r(point), _r(foot)],
        "slice_index": int(best["k"]),
        "septum_length_mm": round(length, 1),
        "septum_roughness_mm": round(roughness, 2),
    })
    problems = []
    if length < RELIABLE_MIN_LENGTH_MM:
        problems.append(f"septum seen over only {length:.0f} mm")
    if roughness > RELIABLE_MAX_ROUGHNESS_MM:
        problems.append(f"septum positions scatter by {roughness:.1f} mm")
    if registration is None:
        problems.append("no template: the ventricle level was found by a heuristic")
    result["reliable"] = not problems
    if problems:
        result["note"] = "; ".join(problems) + ": check the septum point visually"
    return result


def _r(values: np.ndarray, digits: int = 2) -> list[float]:
    return [round(float(x), digits) for x in values]


# --- hematoma location ---------------------------------------------------------------------------

MAX_POINTS_PER_HEMATOMA = 5000  # voxels looked up in the atlas per hematoma (a random subset beyond)
SIDE_MARGIN_MM = 3.0  # centroids closer than this to the ideal midline are "midline"
FULL_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)  # as volumetry: hematomas are 26-connected components
REGION_BY_SUBTYPE = {"IVH": "intraventricular", "SAH": "subarachnoid", "SDH": "extra-axial",
                     "EDH": "extra-axial"}


def hematoma_components(labels: np.ndarray, label: int, hematomas: list[dict],
                        affine: np.ndarray) -> dict[int, np.ndarray]:
    """Voxel indices ``(n, 3)`` as (k, j, i) of each hematoma id of one subtype.

    Components are recomputed like volumetry (26-connected) and matched to the report's entries by
    voxel count and nearest centroid, so a different ordering cannot swap two hematomas.
    """
    if not hematomas:
        return {}
    mask = labels == label
    box = ndi.find_objects(mask.astype(np.uint8))
    if not box or box[0] is None:
        return {}
    origin = np.array([s.start for s in box[0]])
    components, count = ndi.label(mask[box[0]], structure=FULL_CONNECTIVITY)
    order = np.argsort(components, axis=None, kind="stable")
    sorted_labels = components.ravel()[order]
    bounds = np.searchsorted(sorted_labels, np.arange(1, count + 2))
    coords = np.stack(np.unravel_index(order, components.shape), axis=1) + origin
    voxels = [coords[bounds[c]:bounds[c + 1]] for c in range(count)]
    centroids = np.array([v.mean(axis=0)[::-1] for v in voxels]) @ affine[:3, :3].T + affine[:3, 3]
    sizes = np.array([len(v) for v in voxels])
    found: dict[int, np.ndarray] = {}
    used: set[int] = set()
    for hem in hematomas:
        target = np.asarray(hem["centroid_lps"], dtype=float)
        cost = np.linalg.norm(centroids - target, axis=1) + np.where(sizes == hem["voxel_count"], 0.0, 1e3)
        for c in np.argsort(cost):
            if int(c) not in used:
                used.add(int(c))
                found[int(hem["id"])] = voxels[int(c)]
                break
    return found


def _locate_one(key: str, voxels: np.ndarray, ct: CTVolume, labels: np.ndarray, registration: Any,
                atlas: Any, plane: dict | None, rng: np.random.Generator) -> dict[str, Any]:
    from .atlas import atlas_labels_at, region_category

    sample = voxels if len(voxels) <= MAX_POINTS_PER_HEMATOMA else voxels[
        rng.choice(len(voxels), MAX_POINTS_PER_HEMATOMA, replace=False)]
    points = ct.voxel_to_lps(sample[:, ::-1].astype(float))
    region_labels = atlas_labels_at(registration, atlas, points)
    named = region_labels[region_labels > 0]
    regions: list[dict[str, Any]] = []
    categories: dict[str, float] = {}
    if len(named):
        values, counts = np.unique(named, return_counts=True)
        for value, n in sorted(zip(values.tolist(), counts.tolist(), strict=True), key=lambda t: -t[1]):
            name = atlas.names.get(int(value), f"label {value}")
            fraction = n / len(region_labels)
            categories[region_category(name)] = categories.get(region_category(name), 0.0) + fraction
            if len(regions) < 3:
                regions.append({"name": name, "fraction": round(fraction, 3)})
    if key == "IPH":
        parenchymal = {c: f for c, f in categories.items() if c != "ventricular"}
        region = max(parenchymal, key=parenchymal.get) if parenchymal else "undetermined"
    else:
        region = REGION_BY_SUBTYPE[key]
    centroid = points.mean(axis=0)
    side = None
    if plane is not None:
        signed = float((centroid - plane["point"]) @ plane["normal"])
        side = "midline" if abs(signed) < SIDE_MARGIN_MM else ("left" if signed > 0 else "right")
    entry: dict[str, Any] = {
        "region": region,
        "side": side,
        "category_fractions": {c: round(f, 3) for c, f in sorted(categories.items())},
        "atlas_regions": regions,
    }
    if key == "IPH":
        entry["intraventricular_extension"] = _touches(labels, voxels, SUBTYPE_LABEL["IVH"])
    return entry


def _touches(labels: np.ndarray, voxels: np.ndarray, other: int) -> bool:
    """Whether the voxels (k, j, i) have a 26-neighbour labelled ``other``."""
    lo = np.maximum(voxels.min(axis=0) - 1, 0)
    hi = np.minimum(voxels.max(axis=0) + 2, labels.shape)
    crop = labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    own = np.zeros(crop.shape, bool)
    own[tuple((voxels - lo).T)] = True
    grown = ndi.binary_dilation(own, structure=FULL_CONNECTIVITY)
    return bool((crop[grown] == other).any())


def hematoma_locations(ct: CTVolume, labels: np.ndarray, volumes: dict, registration: Any, atlas: Any,
                       plane: dict | None) -> list[dict[str, Any]]:
    """Atlas region, side and (IPH) ventricular extension of every hematoma listed in ``volumes``."""
    rng = np.random.default_rng(0)
    out = []
    for key, label in SUBTYPE_LABEL.items():
        hematomas = (volumes.get(key) or {}).get("hematomas") or []
        for hem_id, voxels in hematoma_components(labels, label, hematomas, ct.affine).items():
            out.append({"subtype": key, "id": hem_id,
                        **_locate_one(key, voxels, ct, labels, registration, atlas, plane, rng)})
    return out


# --- ICH score (Hemphill 2001) -------------------------------------------------------------------


def gcs_points(gcs: int) -> int:
    """ICH score points for the Glasgow Coma Scale: 3-4 -> 2, 5-12 -> 1, 13-15 -> 0."""
    check_gcs_age(gcs, None)
    return 2 if gcs <= 4 else (1 if gcs <= 12 else 0)


def check_gcs_age(gcs: int | None, age: int | None) -> None:
    """Raise InputError unless GCS (3..15) and age (0..130 years) are plausible or absent."""
    if gcs is not None and not 3 <= gcs <= 15:
        raise InputError(f"GCS must be 3..15, got {gcs}")
    if age is not None and not 0 <= age <= 130:
        raise InputError(f"age must be 0..130 years, got {age}")


def ich_score(volumes: dict, infratentorial_origin: bool | None, gcs: int | None = None,
              age: int | None = None) -> dict[str, Any]:
    """The ICH score (Hemphill et al., Stroke 2001) from imaging and, when given, GCS and age.

    Imaging parts: IPH volume >= 30 mL (voxel volume of the IPH label), IVH present, infratentorial
    origin (atlas region of the largest IPH; null when it is unknown). The score is only given when
    every part is known: nothing is guessed.
    """
    check_gcs_age(gcs, age)
    iph_ml = float((volumes.get("IPH") or {}).get("volume_ml") or 0.0)
    ivh_ml = float((volumes.get("IVH") or {}).get("volume_ml") or 0.0)
    parts = {
        "volume_ge_30ml": iph_ml >= 30.0,
        "ivh": ivh_ml > 0.0,
        "infratentorial_origin": infratentorial_origin,
        "gcs_points": None if gcs is None else gcs_points(int(gcs)),
        "age_ge_80": None if age is None else bool(age >= 80),
    }
    missing = [name for name, value in (("GCS", gcs), ("age", age),
                                         ("infratentorial origin", infratentorial_origin))
               if value is None]
    score = None
    if not missing:
        score = (parts["gcs_points"] + int(parts["volume_ge_30ml"]) + int(parts["ivh"])
                 + int(bool(parts["infratentorial_origin"])) + int(bool(parts["age_ge_80"])))
    note = None
    if iph_ml == 0.0:
        note = ("no intraparenchymal hemorrhage: the ICH score is meant for spontaneous intracerebral "
                "hemorrhage")
    return {"score": score, **parts, "iph_volume_ml": round(iph_ml, 2), "gcs": gcs, "age": age,
            "missing": missing, "note": note}


# --- everything together -------------------------------------------------------------------------


@dataclass
class TemplateRegistration:
    """The scan's symmetry plane and its registration to the template atlas (None + reason without)."""

    plane: dict | None
    atlas: Any
    registration: Any
    reason: str | None
    timing: dict[str, float]


def register_to_template(ct: CTVolume, brain: np.ndarray) -> TemplateRegistration:
    """Symmetry plane, then affine registration to the template when its files are available."""
    from . import atlas as atlas_module

    t0 = time.perf_counter()
    plane = symmetry_plane(ct, brain) if brain.any() else None
    timing = {"symmetry_plane": time.perf_counter() - t0}
    t1 = time.perf_counter()
    atlas = registration = reason = None
    folder = atlas_module.find_templates()
    if folder is None:
        reason = ("template/atlas files not found (set ICH_TEMPLATES or ICH_SHARED_DIR, or keep "
                  "../shared next to the repository)")
    elif plane is None:
        reason = "empty brain mask: registration to the template not possible"
    else:
        try:
            atlas = atlas_module.load_atlas(folder)
            registration = atlas_module.register(ct, brain, atlas, midline=plane)
        except (RuntimeError, OSError, ValueError) as exc:  # SimpleITK raises RuntimeError; unreadable files
            atlas = registration = None
            reason = f"registration to the template failed ({' '.join(str(exc).split())[:200]})"
    timing["registration"] = time.perf_counter() - t1
    return TemplateRegistration(plane, atlas, registration, reason, timing)


def clinical_measures(ct: CTVolume, labels: np.ndarray, brain: np.ndarray, volumes: dict,
                      gcs: int | None = None, age: int | None = None,
                      template: TemplateRegistration | None = None) -> dict[str, Any]:
    """The report's ``clinical`` section: midline shift, hematoma locations, ICH score (JSON-ready).

    ``template``: a registration already made for this scan and brain mask (the pipeline makes it before
    the model runs, for the ventricle prior); made here when not given.
    """
    t0 = time.perf_counter()
    made_before = 0.0 if template is None else sum(template.timing.values())
    if template is None:
        template = register_to_template(ct, brain)
    timing: dict[str, float] = dict(template.timing)
    plane, atlas, registration = template.plane, template.atlas, template.registration
    location_reason = (None if template.reason is None
                       else f"{template.reason}: hematoma location not determined")

    t2 = time.perf_counter()
    shift = midline_shift(ct, brain, registration, plane)
    timing["midline_shift"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    location = None
    if registration is not None:
        location = {
            "registration": {
                "method": "affine (12 parameters) to the scct MNI CT template, mutual information, "
                          "4 mm grid, started from the mid-sagittal symmetry plane",
                "brain_dice": round(registration.brain_dice, 3),
                "seconds": round(registration.seconds, 3),
                "atlas": "BLAST-CT atlas (template space)",
            },
            "hematomas": hematoma_locations(ct, labels, volumes, registration, atlas, plane),
        }
    timing["location"] = time.perf_counter() - t3

    infratentorial = _infratentorial_origin(volumes, location)
    score = ich_score(volumes, infratentorial, gcs=gcs, age=age)
    timing["total"] = time.perf_counter() - t0 + made_before
    return {
        "midline_shift": shift,
        "location": location,
        "location_reason": location_reason,
        "ich_score": score,
        "timing_s": {k: round(v, 3) for k, v in timing.items()},
    }


def _infratentorial_origin(volumes: dict, location: dict | None) -> bool | None:
    """Whether the largest IPH lies below the tentorium; False without IPH; None when unknown."""
    iph = (volumes.get("IPH") or {}).get("hematomas") or []
    if not iph:
        return False
    if location is None:
        return None
    largest = max(iph, key=lambda h: h["voxel_count"])
    for entry in location["hematomas"]:
        if entry["subtype"] == "IPH" and entry["id"] == largest["id"]:
            if entry["region"] == "undetermined":
                return None
            return entry["region"] == "infratentorial"
    return None


# --- validation helper ---------------------------------------------------------------------------

SIMULATED_SHIFT_SIGMA_MM = (20.0, 30.0, 25.0)  # across the midline, along it (A-P), along the slice normal


class ShiftField:
    """Simulated mass effect: ``u(p) = A * g(p) * w(p) * normal`` (validation of the midline shift).

    ``g`` is an anisotropic Gaussian bump centred on ``centre_lps`` (``sigma_mm`` across the midline, along
    it, and along the slice normal); ``w`` rises from 0 at the inner table of the skull to 1 at
    ``TAPER_MM`` inside the intracranial mask, so the skull and the falx attachments stay in place,
    as they do in real mass effect. ``A`` is chosen so that the structure at the centre moves by
    exactly ``shift_mm``; structures away from it move less (:meth:`displacement`).
    """

    TAPER_MM = 15.0

    def __init__(self, ct: CTVolume, brain: np.ndarray, centre_lps: np.ndarray, normal: np.ndarray,
                 shift_mm: float, sigma_mm: tuple[float, float, float] = SIMULATED_SHIFT_SIGMA_MM) -> None:
        self.ct = ct
        self.centre = np.asarray(centre_lps, float)
        self.normal = np.asarray(normal, float) / np.linalg.norm(normal)
        self.shift_mm = float(shift_mm)
        self.sigma_mm = np.asarray(sigma_mm, float)
        # peak height such that the structure at the centre moves by exactly shift_mm: it ends at
        # d = A * exp(-d^2 / (2 sigma_across^2)) along the normal (the taper is 1 that deep)
        self.amplitude = self.shift_mm * math.exp(self.shift_mm ** 2 / (2.0 * self.sigma_mm[0] ** 2))
        along = np.cross(ct.slice_normal, self.normal)
        along /= np.linalg.norm(along)
        self.axes = np.stack([self.normal, along, np.cross(self.normal, along)])  # across, A-P, ~S-I
        dx, dy, dz = ct.spacing
        self.depth = ndi.distance_transform_edt(brain, sampling=(dz, dy, dx)).astype(np.float32)

    def magnitude(self, points_lps: np.ndarray) -> np.ndarray:
        """Displacement (mm, along ``normal``) at each point."""
        local = (points_lps - self.centre) @ self.axes.T / self.sigma_mm
        bump = np.exp(-0.5 * np.sum(local * local, axis=-1))
        vox = self.ct.lps_to_voxel(points_lps)
        depth = ndi.map_coordinates(self.depth, [vox[:, 2], vox[:, 1], vox[:, 0]], order=1, cval=0.0)
        taper = np.clip(depth / self.TAPER_MM, 0.0, 1.0)
        taper = taper * taper * (3.0 - 2.0 * taper)  # smoothstep
        return self.amplitude * bump * taper

    def displacement(self, point_lps: np.ndarray) -> float:
        """How far the structure at ``point_lps`` moves along ``normal`` (fixed point of p = q + u(p))."""
        start = np.asarray(point_lps, float).reshape(1, 3)
        moved = start.copy()
        for _ in range(100):  # converges: |grad u| < 1 for the sizes used here
            moved = start + self.magnitude(moved)[:, None] * self.normal
        return float(((moved - start) @ self.normal)[0])

    def box(self) -> tuple[np.ndarray, np.ndarray]:
        """Voxel index bounds (i, j, k) of the region where the bump exceeds ~1 % of its height."""
        reach = 3.0 * np.sqrt(((self.axes.T * self.sigma_mm) ** 2).sum(axis=1))
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        corners = self.ct.lps_to_voxel(self.centre + signs * reach)
        lo = np.clip(np.floor(corners.min(axis=0)).astype(int), 0, None)
        hi = np.minimum(np.ceil(corners.max(axis=0)).astype(int) + 1,
                        [self.ct.shape[2], self.ct.shape[1], self.ct.shape[0]])
        return lo, hi


def expected_shift_on_slice(ct: CTVolume, brain: np.ndarray, plane: dict, k: int, field: ShiftField,
                            registration: Any = None) -> float | None:
    """Truth for a simulated shift: the septum of the original scan on slice ``k``, each of its rows
    moved by ``field`` (exact), summarised by the same statistic as :func:`midline_shift`
    (``registration``: the original scan's, to search the same region)."""
    prior = None if registration is None else septum_prior(ct, registration)
    found = septum_on_slice(ct, brain, plane, k, prior)
    if found is None or len(found["rows"]) < MIN_SEPTUM_ROWS:
        return None
    rows = found["rows"].copy()
    u_dot_n = float(found["u"] @ plane["normal"])
    for row in rows:
        point = found["origin"] + row[1] * found["u"] + row[0] * found["v"]
        row[1] += field.displacement(point) / u_dot_n
    return septum_point({**found, "rows": rows}, plane)[1]


def simulate_midline_shift(ct: CTVolume, brain: np.ndarray, centre_lps: np.ndarray, normal: np.ndarray,
                           shift_mm: float, sigma_mm: tuple[float, float, float] = SIMULATED_SHIFT_SIGMA_MM
                           ) -> tuple[CTVolume, ShiftField]:
    """A copy of ``ct`` whose midline structures are pushed by ``shift_mm`` along ``normal`` (validation).

    See :class:`ShiftField`. The image is resampled backwards (``out(p) = in(p - u(p))``, linear).
    Returns the new volume and the field (``field.displacement(point)`` is the exact truth).
    """
    field = ShiftField(ct, brain, centre_lps, normal, shift_mm, sigma_mm)
    lo, hi = field.box()
    hu = ct.hu.astype(np.float32)
    out = hu.copy()
    jj, ii = np.mgrid[lo[1]:hi[1], lo[0]:hi[0]]
    for k in range(lo[2], hi[2]):
        points = ct.voxel_to_lps(np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, k)], axis=1))
        source = ct.lps_to_voxel(points - field.magnitude(points)[:, None] * field.normal)
        values = ndi.map_coordinates(hu, [source[:, 2], source[:, 1], source[:, 0]], order=1, mode="nearest")
        out[k, lo[1]:hi[1], lo[0]:hi[0]] = values.reshape(ii.shape)
    if not np.issubdtype(ct.hu.dtype, np.floating):
        out = np.rint(out).astype(ct.hu.dtype)
    shifted = CTVolume(hu=out, affine=ct.affine.copy(),
                       source=f"{ct.source} (simulated midline shift {shift_mm:+.1f} mm)",
                       series_uid=ct.series_uid, input_slices=list(ct.input_slices),
                       resampling=ct.resampling, warnings=list(ct.warnings))
    return shifted, field
