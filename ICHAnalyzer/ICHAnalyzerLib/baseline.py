"""Classical threshold baseline for acute hemorrhage (reported beside the network, never shipped as a model).

Blood density (default 50-90 HU, after a small in-plane median filter) inside the intracranial mask, minus
voxels next to bone or calcification (> ``calcium_hu``), minus small connected components. Components that
touch the inner table are called extra-axial (SDH, label 4), the others intraparenchymal (IPH, label 1): the
baseline does not really tell subtypes apart, and its scores are for any hemorrhage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .volume import CTVolume


@dataclass
class BaselineResult:
    """Threshold segmentation and its detection scores."""

    labels: np.ndarray  # uint8 [k, j, i]: 1 intra-axial blood, 4 extra-axial blood, 0 elsewhere
    slice_area_mm2: np.ndarray  # (nk,) blood area per slice (mm^2): the slice score
    scan_volume_ml: float  # total blood volume (mL): the scan score


def threshold_baseline(ct: CTVolume, brain: np.ndarray, low_hu: float = 50.0, high_hu: float = 90.0,
                       calcium_hu: float = 130.0, margin_mm: float = 2.0, min_component_ml: float = 0.1,
                       edge_mm: float = 4.0) -> BaselineResult:
    """Segment blood-density voxels inside ``brain``; see the module docstring."""
    dx, dy, _ = ct.spacing
    brain = np.asarray(brain, dtype=bool)
    hu = ndimage.median_filter(ct.hu.astype(np.float32), size=(1, 3, 3))
    candidate = brain & (hu >= low_hu) & (hu <= high_hu)
    # bone / calcification and a margin around it (partial volume of the skull and calcified plexus)
    margin = max(1, int(round(margin_mm / min(dx, dy))))
    dense = ct.hu > calcium_hu
    near_dense = ndimage.binary_dilation(dense, structure=np.ones((1, 3, 3)), iterations=margin)
    candidate &= ~near_dense
    comp, n = ndimage.label(candidate)
    labels = np.zeros(ct.shape, np.uint8)
    if n:
        voxel_ml = ct.voxel_volume_mm3 / 1000.0
        sizes = ndimage.sum(candidate, comp, np.arange(1, n + 1)) * voxel_ml
        keep = np.zeros(n + 1, bool)
        keep[1:] = sizes >= min_component_ml
        kept = keep[comp]
        # extra-axial when a component reaches within edge_mm of the mask's outside
        outside_near = ndimage.binary_dilation(~brain, structure=np.ones((1, 3, 3)),
                                               iterations=max(1, int(round(edge_mm / min(dx, dy)))))
        touching = np.unique(comp[kept & outside_near])
        extra = np.zeros(n + 1, bool)
        extra[touching[touching > 0]] = True
        labels[kept] = 1
        labels[kept & extra[comp]] = 4
    area = (labels > 0).sum(axis=(1, 2)) * dx * dy
    return BaselineResult(labels=labels, slice_area_mm2=area.astype(np.float64),
                          scan_volume_ml=float((labels > 0).sum() * ct.voxel_volume_mm3 / 1000.0))
