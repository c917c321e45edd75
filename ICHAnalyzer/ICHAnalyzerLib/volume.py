"""The core image type: a CT volume on a regular (possibly sheared) grid with exact physical geometry.

Conventions used everywhere in the core:
- ``hu`` is indexed ``[k, j, i]`` (slice, row, column), ``k`` runs along the slice normal (axial slices).
- ``affine`` maps voxel indices ``(i, j, k, 1)`` to patient coordinates in millimetres, **LPS**
  (DICOM patient coordinates). Its first two columns are the in-plane row and column steps
  (orthogonal), the third is the step from one slice to the next. With gantry tilt that step is
  not along the slice normal (the grid is sheared): the true voxel depth is the distance between
  slice planes, ``|det(affine[:3, :3])| / (dx * dy)``, never the length of the step.
- Label maps are ``uint8`` arrays of the same shape, labels from ``constants.SUBTYPES``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class InputSlice:
    """One slice of the original input, in input (spatial) order, and where it lies on the grid."""

    index: int  # position in the input order (0-based)
    z_mm: float  # position along the slice normal (mm, relative to the patient origin)
    grid_k: float  # matching (possibly fractional) slice index on the analysis grid
    sop_instance_uid: str | None = None
    set_aside: bool = False  # e.g. a duplicate image at an already used position


@dataclass
class CTVolume:
    """A head CT in Hounsfield units on a regular grid, with its exact physical geometry."""

    hu: np.ndarray  # [k, j, i], int16 or float32, Hounsfield units
    affine: np.ndarray  # 4x4, voxel (i, j, k) -> LPS mm
    source: str = ""  # path or description of the input
    series_uid: str | None = None
    input_slices: list[InputSlice] = field(default_factory=list)
    resampling: str | None = None  # what was resampled and why; None when the grid is the input's
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=float)
        if self.hu.ndim != 3:
            raise ValueError(f"CT array must be 3D, got shape {self.hu.shape}")
        if self.affine.shape != (4, 4):
            raise ValueError("affine must be 4x4")
        if not self.input_slices:
            normal = self.slice_normal
            self.input_slices = [
                InputSlice(index=k, z_mm=float(self.voxel_to_lps([0, 0, k])[0] @ normal), grid_k=float(k))
                for k in range(self.shape[0])
            ]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(nk, nj, ni)``."""
        return tuple(int(n) for n in self.hu.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """In-plane column and row spacing and slice-plane distance ``(dx, dy, dz)`` in mm."""
        dx = float(np.linalg.norm(self.affine[:3, 0]))
        dy = float(np.linalg.norm(self.affine[:3, 1]))
        return dx, dy, self.voxel_volume_mm3 / (dx * dy)

    @property
    def voxel_volume_mm3(self) -> float:
        """True voxel volume: |det| of the linear part (shear does not change it)."""
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    @property
    def slice_normal(self) -> np.ndarray:
        """Unit normal of the slice planes (cross product of row and column directions), LPS."""
        n = np.cross(self.affine[:3, 0], self.affine[:3, 1])
        n = n / np.linalg.norm(n)
        if n @ self.affine[:3, 2] < 0:
            n = -n
        return n

    @property
    def tilt_deg(self) -> float:
        """Angle between the slice step and the slice normal (gantry tilt), degrees."""
        step = self.affine[:3, 2]
        cos = abs(step @ self.slice_normal) / np.linalg.norm(step)
        return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))

    def voxel_to_lps(self, ijk: np.ndarray | list[float]) -> np.ndarray:
        """Voxel coordinates ``(..., 3)`` in (i, j, k) order to LPS mm."""
        ijk = np.atleast_2d(np.asarray(ijk, dtype=float))
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def lps_to_voxel(self, lps: np.ndarray | list[float]) -> np.ndarray:
        """LPS mm ``(..., 3)`` to continuous voxel coordinates (i, j, k)."""
        lps = np.atleast_2d(np.asarray(lps, dtype=float))
        return (lps - self.affine[:3, 3]) @ np.linalg.inv(self.affine[:3, :3]).T


def lps_to_ras(affine_lps: np.ndarray) -> np.ndarray:
    """Convert an IJK->LPS affine to IJK->RAS (NIfTI, Slicer)."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ np.asarray(affine_lps, dtype=float)


def ras_to_lps(affine_ras: np.ndarray) -> np.ndarray:
    """Convert an IJK->RAS affine to IJK->LPS."""
    return lps_to_ras(affine_ras)
