"""Synthetic lesion masks for the volumetry tests and the ABC/2 study, rasterized at voxel centres.

Every shape is defined in physical (LPS, mm) space and sampled at the voxel centres given by the affine,
so the masks are exactly what a scanner grid (possibly sheared by gantry tilt) would see. Also the
closed-form geometry (circle-lens areas, sphere-lens volumes) the tests work expected values out with.
"""

from __future__ import annotations

import math

import numpy as np


def grid_affine(dx: float, dy: float, dz: float, tilt_deg: float = 0.0, yaw_deg: float = 0.0,
                origin: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """IJK -> LPS affine: in-plane axes rotated by ``yaw_deg`` about z, slice step leaning by ``tilt_deg``
    towards the row direction (gantry tilt), plane distance ``dz``."""
    yaw = math.radians(yaw_deg)
    rot = np.array([[math.cos(yaw), -math.sin(yaw), 0.0], [math.sin(yaw), math.cos(yaw), 0.0], [0, 0, 1.0]])
    a = np.eye(4)
    a[:3, 0] = rot @ [dx, 0.0, 0.0]
    a[:3, 1] = rot @ [0.0, dy, 0.0]
    a[:3, 2] = rot @ [0.0, dz * math.tan(math.radians(tilt_deg)), dz]
    a[:3, 3] = origin
    return a


def voxel_centres(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """LPS of every voxel centre, array ``[k, j, i, 3]``."""
    k, j, i = np.indices(shape, dtype=float)
    ijk = np.stack([i, j, k], axis=-1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def ellipsoid(shape: tuple[int, int, int], affine: np.ndarray, centre: np.ndarray,
              axes: tuple[float, float, float], angle_deg: float) -> np.ndarray:
    """Ellipsoid with semi-axes (a, b, c): a and b in the axial (LPS x-y) plane, a rotated by ``angle_deg``
    from +x, c along z."""
    p = voxel_centres(shape, affine) - np.asarray(centre, float)
    t = math.radians(angle_deg)
    u = p[..., 0] * math.cos(t) + p[..., 1] * math.sin(t)
    v = -p[..., 0] * math.sin(t) + p[..., 1] * math.cos(t)
    return (u / axes[0]) ** 2 + (v / axes[1]) ** 2 + (p[..., 2] / axes[2]) ** 2 <= 1.0


def sphere(shape: tuple[int, int, int], affine: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    return ellipsoid(shape, affine, centre, (radius, radius, radius), 0.0)


def shell_sector(shape: tuple[int, int, int], affine: np.ndarray, axis_xy: tuple[float, float],
                 r_in: float, r_out: float, half_angle_deg: float, z_range: tuple[float, float],
                 direction_deg: float = 90.0) -> np.ndarray:
    """Crescent: cylindrical shell (axis along z through ``axis_xy``) between ``r_in`` and ``r_out``,
    within ``half_angle_deg`` of ``direction_deg`` (in the x-y plane) and between the two z values."""
    p = voxel_centres(shape, affine)
    x, y = p[..., 0] - axis_xy[0], p[..., 1] - axis_xy[1]
    r = np.hypot(x, y)
    d = math.radians(direction_deg)
    cos_to_dir = (x * math.cos(d) + y * math.sin(d)) / np.maximum(r, 1e-9)
    return ((r >= r_in) & (r <= r_out) & (cos_to_dir >= math.cos(math.radians(half_angle_deg)))
            & (p[..., 2] >= z_range[0]) & (p[..., 2] <= z_range[1]))


def circle_lens_area(r1: float, r2: float, d: float) -> float:
    """Area of the intersection of two circles (radii r1, r2, centres d apart)."""
    if r1 <= 0 or r2 <= 0 or d >= r1 + r2:
        return 0.0
    if d <= abs(r1 - r2):
        return math.pi * min(r1, r2) ** 2
    a1 = r1 * r1 * math.acos((d * d + r1 * r1 - r2 * r2) / (2 * d * r1))
    a2 = r2 * r2 * math.acos((d * d + r2 * r2 - r1 * r1) / (2 * d * r2))
    return a1 + a2 - 0.5 * math.sqrt((-d + r1 + r2) * (d + r1 - r2) * (d - r1 + r2) * (d + r1 + r2))


def sphere_lens_volume(r1: float, r2: float, d: float) -> float:
    """Volume of the intersection of two spheres (radii r1, r2, centres d apart, partial overlap)."""
    if d >= r1 + r2:
        return 0.0
    if d <= abs(r1 - r2):
        return 4 / 3 * math.pi * min(r1, r2) ** 3
    return (math.pi * (r1 + r2 - d) ** 2
            * (d * d + 2 * d * r2 - 3 * r2 * r2 + 2 * d * r1 + 6 * r1 * r2 - 3 * r1 * r1) / (12 * d))


def rotation_matrix(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rotation about a unit ``axis`` by ``angle_deg`` (Rodrigues)."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    t = math.radians(angle_deg)
    return np.eye(3) + math.sin(t) * k + (1 - math.cos(t)) * (k @ k)


def oriented_ellipsoid(points: np.ndarray, centre: np.ndarray, axes: np.ndarray,
                       rotation: np.ndarray) -> np.ndarray:
    """Ellipsoid with semi-axes ``axes`` along the columns of ``rotation``, at LPS ``points[..., 3]``."""
    local = (points - centre) @ rotation
    return np.sum((local / np.asarray(axes, float)) ** 2, axis=-1) <= 1.0
