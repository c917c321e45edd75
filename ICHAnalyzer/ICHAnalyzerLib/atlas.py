"""Affine registration of a head CT to the MNI CT template and look-up of atlas brain regions.

Template: ``scct_stripped.nii.gz`` (Rorden's adult CT template, 2 mm MNI, brain only). Atlas:
``blast-ct_atlas_template_space.nii.gz`` (BLAST-CT, 1 mm, same MNI space: its brain mask overlaps the
scct brain with Dice 0.93 and their centroids agree within 1 mm) with ``blast-ct_atlas_labels.csv``.
Both are read in place from ``$ICH_TEMPLATES``, ``$ICH_SHARED_DIR/data/templates`` or the repository's
``../shared/data/templates``; when they are absent :func:`find_templates` returns None and callers
report a reason instead of a location.

The registration is intensity based (Mattes mutual information between the brain-masked CT, resampled
to a 4 mm LPS grid, and the template), 12-parameter affine, initialised on the centres of mass of the
two brain masks and, when given, the scan's mid-sagittal symmetry plane. SimpleITK works in LPS for
both images, so the transform maps CT patient coordinates (LPS mm) to template LPS mm directly; the
sheared (gantry-tilt) CT grid is resampled here, not by ITK.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk  # noqa: N813
from scipy import ndimage as ndi

from .errors import InputError
from .volume import CTVolume

TEMPLATE_FILE = "scct_stripped.nii.gz"
ATLAS_FILE = "blast-ct_atlas_template_space.nii.gz"
ATLAS_LABELS_FILE = "blast-ct_atlas_labels.csv"
ATLAS_MASK_FILE = "blast-ct_template_brain_mask.nii.gz"
TEMPLATE_BRAIN_MIN = 100.0  # scct_stripped values above this are brain (its background/edge is ~0-100)
REGISTRATION_GRID_MM = 4.0

# atlas label names -> the ICH location categories used for the ICH score and reports
DEEP_KEYWORDS = ("BasalGanglia", "Basalganglia", "Caudate", "Thalamus", "BasalForebrain")
INFRATENTORIAL_KEYWORDS = ("BrainStem", "Cerebellum")
VENTRICLE_KEYWORDS = ("Ventricle",)


def region_category(name: str) -> str:
    """``deep``, ``infratentorial``, ``ventricular`` or ``lobar`` for an atlas region name."""
    if any(key in name for key in INFRATENTORIAL_KEYWORDS):
        return "infratentorial"
    if any(key in name for key in DEEP_KEYWORDS):
        return "deep"
    if any(key in name for key in VENTRICLE_KEYWORDS):
        return "ventricular"
    return "lobar"  # frontal, parietal, temporal, occipital lobes, insula, hippocampus


def find_templates() -> Path | None:
    """Folder holding the template and atlas files, or None when they are not available."""
    candidates = []
    if os.environ.get("ICH_TEMPLATES"):
        candidates.append(Path(os.environ["ICH_TEMPLATES"]))
    if os.environ.get("ICH_SHARED_DIR"):
        candidates.append(Path(os.environ["ICH_SHARED_DIR"]) / "data" / "templates")
    repo = Path(__file__).resolve().parents[2]
    candidates.append(repo.parent / "shared" / "data" / "templates")
    for folder in candidates:
        if all((folder / f).is_file() for f in (TEMPLATE_FILE, ATLAS_FILE, ATLAS_LABELS_FILE)):
            return folder
    return None


@dataclass(frozen=True)
class Atlas:
    """The template image, its brain mask and the region atlas, with their LPS geometry."""

    template: sitk.Image  # float32, LPS geometry from the NIfTI header
    template_mask: np.ndarray  # bool [z, y, x] on the template grid
    labels: np.ndarray  # int16 [z, y, x] on the atlas grid
    labels_lps_to_index: np.ndarray  # 4x4: LPS mm -> atlas (x, y, z) index
    names: dict[int, str]
    folder: Path


def _lps_to_index(image: sitk.Image) -> np.ndarray:
    direction = np.array(image.GetDirection()).reshape(3, 3)
    forward = np.eye(4)
    forward[:3, :3] = direction * np.array(image.GetSpacing())
    forward[:3, 3] = image.GetOrigin()
    return np.linalg.inv(forward)


@lru_cache(maxsize=2)
def load_atlas(folder: Path) -> Atlas:
    """Read the template and atlas from ``folder`` (cached)."""
    template = sitk.ReadImage(str(folder / TEMPLATE_FILE), sitk.sitkFloat32)
    template_mask = sitk.GetArrayFromImage(template) > TEMPLATE_BRAIN_MIN
    atlas = sitk.ReadImage(str(folder / ATLAS_FILE))
    labels = np.rint(sitk.GetArrayFromImage(atlas)).astype(np.int16)
    with open(folder / ATLAS_LABELS_FILE, newline="") as f:
        names = {int(row["ROIIndex"]): row["ROIName"].strip() for row in csv.DictReader(f)}
    return Atlas(template, template_mask, labels, _lps_to_index(atlas), names, folder)


@dataclass
class Registration:
    """An affine map from CT patient coordinates (LPS) to template coordinates (LPS)."""

    matrix: np.ndarray  # 4x4, CT LPS mm -> template LPS mm
    brain_dice: float  # Dice of the CT brain mask with the template brain mask, in template space
    metric: float
    seconds: float

    def to_template(self, points_lps: np.ndarray) -> np.ndarray:
        """CT points ``(n, 3)`` LPS mm to template LPS mm."""
        points = np.atleast_2d(np.asarray(points_lps, dtype=float))
        return points @ self.matrix[:3, :3].T + self.matrix[:3, 3]

    def to_ct(self, template_lps: np.ndarray) -> np.ndarray:
        """Template points ``(n, 3)`` LPS mm to CT LPS mm."""
        inverse = np.linalg.inv(self.matrix)
        points = np.atleast_2d(np.asarray(template_lps, dtype=float))
        return points @ inverse[:3, :3].T + inverse[:3, 3]


def ct_on_lps_grid(ct: CTVolume, brain: np.ndarray, step_mm: float) -> tuple[sitk.Image, sitk.Image]:
    """Brain-masked CT (HU, background -50) and its mask on an axis-aligned LPS grid of ``step_mm``."""
    stride = 8 if brain[:, ::8, ::8].any() else 1  # coarse bounding box is enough (all voxels if tiny)
    idx = np.argwhere(brain[:, ::stride, ::stride])
    if len(idx) == 0:
        raise InputError(f"No intracranial region found in {ct.source or 'the CT'}: cannot register it")
    ijk = np.stack([idx[:, 2] * stride, idx[:, 1] * stride, idx[:, 0]], axis=1)
    corners = ct.voxel_to_lps(ijk)
    lo = corners.min(axis=0) - 2 * step_mm
    hi = corners.max(axis=0) + 2 * step_mm
    shape = (np.ceil((hi - lo) / step_mm).astype(int) + 1)
    axes = [lo[d] + step_mm * np.arange(shape[d]) for d in range(3)]
    zz, yy, xx = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    pts = np.stack([xx.ravel(), yy.ravel(), zz.ravel()], axis=1)
    vox = ct.lps_to_voxel(pts)
    coords = [vox[:, 2], vox[:, 1], vox[:, 0]]
    # average the fine in-plane pixels into the coarse grid first: sample a smoothed copy
    dx, dy, _ = ct.spacing
    sigma = (0.0, 0.4 * step_mm / dy, 0.4 * step_mm / dx)
    hu = np.clip(ct.hu, -50, 150).astype(np.float32)
    hu_s = ndi.gaussian_filter(hu[:, ::2, ::2], (0.0, sigma[1] / 2, sigma[2] / 2))
    coords_half = [coords[0], coords[1] / 2, coords[2] / 2]
    values = ndi.map_coordinates(hu_s, coords_half, order=1, cval=-50.0)
    inside = ndi.map_coordinates(brain[:, ::2, ::2].astype(np.float32), coords_half, order=1, cval=0.0) > 0.5
    values = np.where(inside, values, -50.0).astype(np.float32).reshape(zz.shape)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing([step_mm] * 3)
    image.SetOrigin([float(v) for v in lo])
    mask = sitk.GetImageFromArray(inside.reshape(zz.shape).astype(np.uint8))
    mask.CopyInformation(image)
    return image, mask


def affine_matrix(transform: sitk.Transform) -> np.ndarray:
    """4x4 matrix of an ITK affine or rigid transform (fixed point -> moving point)."""
    a = np.array(transform.GetMatrix()).reshape(3, 3)
    c = np.array(transform.GetCenter())
    t = np.array(transform.GetTranslation())
    m = np.eye(4)
    m[:3, :3] = a
    m[:3, 3] = t + c - a @ c
    return m


def mattes_registration(transform: sitk.Transform, sampling: float, seed: int, learning_rate: float,
                        min_step: float, iterations: int) -> sitk.ImageRegistrationMethod:
    """Mattes mutual information (32 bins, random sampling), regular-step gradient descent, 2 levels
    (shrink 2 then 1, smoothing 1 then 0 voxels), optimising ``transform`` in place."""
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(sampling, seed=seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=learning_rate, minStep=min_step,
                                                 numberOfIterations=iterations, relaxationFactor=0.5,
                                                 gradientMagnitudeTolerance=1e-6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(transform, inPlace=True)
    return reg


def _rotation_onto(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit vector ``a`` onto unit vector ``b`` (Rodrigues)."""
    axis = np.cross(a, b)
    sin = float(np.linalg.norm(axis))
    cos = float(a @ b)
    if sin < 1e-9:
        return np.eye(3)
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + k + k @ k * ((1.0 - cos) / sin**2)


def register(ct: CTVolume, brain: np.ndarray, atlas: Atlas, midline: dict | None = None) -> Registration:
    """Affine registration of the CT to the template (see module docstring).

    ``midline`` ({"point", "normal"} LPS, e.g. ``measures.symmetry_plane``): the scan's mid-sagittal
    plane; the start rotates it onto the template's (x = 0), which keeps the optimiser from settling
    with the head turned (measured: mid-sagittal plane mapped within 0.2-0.6 mm of x = 0 instead of
    0.5-4.5 mm from a moments-only start).
    """
    start = time.perf_counter()
    fixed, fixed_mask = ct_on_lps_grid(ct, brain, REGISTRATION_GRID_MM)
    moving = atlas.template
    moving_mask = sitk.GetImageFromArray(atlas.template_mask.astype(np.uint8))
    moving_mask.CopyInformation(moving)
    initial = sitk.CenteredTransformInitializer(
        sitk.Cast(fixed_mask, sitk.sitkFloat32), sitk.Cast(moving_mask, sitk.sitkFloat32),
        sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS)
    transform = sitk.AffineTransform(initial)
    if midline is not None:
        normal = np.asarray(midline["normal"], float)
        normal = normal / np.linalg.norm(normal) * np.sign(normal[0] or 1.0)  # toward the patient's left
        rotation = _rotation_onto(normal, np.array([1.0, 0.0, 0.0]))
        centre = np.array(transform.GetCenter())
        translation = np.array(transform.GetTranslation())
        on_plane = rotation @ (np.asarray(midline["point"], float) - centre) + centre + translation
        translation[0] -= on_plane[0]  # the plane's point onto x = 0
        transform.SetMatrix(rotation.ravel().tolist())
        transform.SetTranslation(translation.tolist())
    reg = mattes_registration(transform, sampling=0.1, seed=7, learning_rate=1.0, min_step=1e-2,
                              iterations=60)
    reg.Execute(fixed, moving)
    matrix = affine_matrix(transform)
    registration = Registration(matrix=matrix, brain_dice=0.0, metric=float(reg.GetMetricValue()),
                                seconds=0.0)
    registration.brain_dice = brain_dice(registration, fixed_mask, atlas)
    registration.seconds = time.perf_counter() - start
    return registration


def brain_dice(registration: Registration, fixed_mask: sitk.Image, atlas: Atlas) -> float:
    """Dice of the CT brain mask (on its LPS grid) with the template brain mask mapped onto it."""
    ct_mask = sitk.GetArrayFromImage(fixed_mask).astype(bool)
    zz, yy, xx = np.nonzero(np.ones(ct_mask.shape, bool))
    origin = np.array(fixed_mask.GetOrigin())
    step = np.array(fixed_mask.GetSpacing())
    pts = np.stack([xx, yy, zz], axis=1) * step + origin
    tmpl_index = (registration.to_template(pts) - np.array(atlas.template.GetOrigin())) @ np.linalg.inv(
        np.array(atlas.template.GetDirection()).reshape(3, 3) * np.array(atlas.template.GetSpacing())).T
    mapped = ndi.map_coordinates(atlas.template_mask.astype(np.float32),
                                 [tmpl_index[:, 2], tmpl_index[:, 1], tmpl_index[:, 0]], order=1) > 0.5
    mapped = mapped.reshape(ct_mask.shape)
    return float(2.0 * (mapped & ct_mask).sum() / max(1, mapped.sum() + ct_mask.sum()))


def atlas_labels_at(registration: Registration, atlas: Atlas, points_lps: np.ndarray) -> np.ndarray:
    """Atlas label (0 = none) at CT patient points (nearest atlas voxel)."""
    tmpl = registration.to_template(points_lps)
    index = np.rint(tmpl @ atlas.labels_lps_to_index[:3, :3].T + atlas.labels_lps_to_index[:3, 3]).astype(int)
    shape = atlas.labels.shape  # [z, y, x]
    inside = ((index >= 0) & (index < np.array([shape[2], shape[1], shape[0]]))).all(axis=1)
    out = np.zeros(len(index), dtype=np.int16)
    out[inside] = atlas.labels[index[inside, 2], index[inside, 1], index[inside, 0]]
    return out


def region_mask(ct: CTVolume, brain: np.ndarray, registration: Registration, atlas: Atlas,
                category: str = "ventricular") -> np.ndarray:
    """Brain voxels of ``ct`` whose mapped atlas region is of ``category`` (bool, on the CT's own grid).

    Affine registration: the atlas ventricles follow the head's size and pose, not the patient's own
    ventricle shape (enlarged or compressed ventricles are only partly covered).
    """
    wanted = [value for value, name in atlas.names.items() if region_category(name) == category]
    brain = np.asarray(brain, dtype=bool)
    out = np.zeros(ct.shape, dtype=bool)
    if not wanted:
        return out
    for k in np.flatnonzero(brain.any(axis=(1, 2))):  # slice by slice: memory stays small on thin series
        jj, ii = np.nonzero(brain[k])
        points = ct.voxel_to_lps(np.stack([ii, jj, np.full(ii.size, k)], axis=1))
        hit = np.isin(atlas_labels_at(registration, atlas, points), wanted)
        out[k, jj[hit], ii[hit]] = True
    return out
