"""Hemorrhage segmentation and detection with the installed models (PyTorch + MONAI, CPU or CUDA).

Models are described in ``models/Models.json`` (data-driven: a new model needs no code change). Each
network is a 2.5D slice network: every axial slice of the CT is resampled in-plane onto a fixed grid
(``input.size`` pixels of ``input.spacing_mm``, centred on the brain), and its channels are the slice and
its neighbours ``input.context_mm`` away, each in every intensity window. The class probabilities are
resampled back onto the CT's own grid, so ``labels`` lines up voxel for voxel with the input.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from .constants import DETECTION_KEYS, MAX_LABEL
from .errors import ModelError
from .volume import CTVolume

MODELS_DIR = Path(__file__).resolve().parent / "models"
MODELS_JSON = MODELS_DIR / "Models.json"
AIR_HU = -1024.0


@dataclass
class Prediction:
    """Model output on the CT's own grid."""

    labels: np.ndarray  # uint8 [k, j, i] on ct's grid; 0 outside the brain mask
    slice_probabilities: np.ndarray  # (nk, 6) in [0, 1], columns constants.DETECTION_KEYS
    scan_probabilities: dict[str, float]  # keys constants.DETECTION_KEYS
    model_name: str
    model_version: str
    ventricle_prior: bool = False  # whether IPH inside the given ventricle mask was counted as IVH


@dataclass
class LoadedModel:
    """A network with its weights and the Models.json entry that describes it."""

    spec: dict
    network: torch.nn.Module
    device: torch.device

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def version(self) -> str:
        return str(self.spec["version"])

    @property
    def uses_ventricle_prior(self) -> bool:
        """Whether the model expects the atlas ventricle mask (``detection.ventricle_prior``)."""
        return bool(self.spec.get("detection", {}).get("ventricle_prior"))


# ------------------------------------------------------------------------------------------ registry
def _read_registry(path: Path = MODELS_JSON) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"model registry not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise ModelError(f"model registry {path} is not valid JSON: {exc}") from exc
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise ModelError(f"model registry {path} has no 'models' list")
    return models


def available_models(registry: Path | None = None) -> list[dict]:
    """Entries of Models.json (the first one is the default model); [] when no registry is installed."""
    registry = registry or MODELS_JSON
    if not registry.exists():
        return []
    return _read_registry(registry)


def sha256_file(path: Path) -> str:
    """SHA-256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_network(arch: dict) -> torch.nn.Module:
    """Instantiate the MONAI network described by a Models.json ``architecture`` entry."""
    from monai.networks import nets

    params = dict(arch)
    kind = params.pop("type", None)
    factory = getattr(nets, str(kind), None)
    if factory is None:
        raise ModelError(f"unknown network architecture {kind!r} in Models.json")
    try:
        return factory(**params)
    except TypeError as exc:
        raise ModelError(f"bad parameters for {kind}: {exc}") from exc


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but CUDA is not available")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ModelError(f"unknown device {device!r}") from exc


def load_model(name: str | None = None, device: str = "auto", registry: Path | None = None) -> LoadedModel:
    """Load a model by name (default: the first in Models.json) after checking its weights' SHA-256."""
    registry = registry or MODELS_JSON
    entries = _read_registry(registry)
    if not entries:
        raise ModelError(f"no model listed in {registry}")
    spec = entries[0] if name is None else next((e for e in entries if e.get("name") == name), None)
    if spec is None:
        names = ", ".join(str(e.get("name")) for e in entries)
        raise ModelError(f"model {name!r} not found (available: {names})")
    weights = registry.parent / str(spec["file"])
    if not weights.is_file():
        raise ModelError(f"weights of model {spec['name']!r} are missing: {weights}")
    if sha256_file(weights) != spec["sha256"]:
        raise ModelError(f"weights of model {spec['name']!r} are corrupt (SHA-256 mismatch): {weights}")
    network = build_network(spec["architecture"])
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - any unpickling/shape problem is a model problem for the user
        raise ModelError(f"weights of model {spec['name']!r} cannot be loaded: {exc}") from exc
    dev = _resolve_device(device)
    network.to(dev).eval()
    return LoadedModel(spec=spec, network=network, device=dev)


# ------------------------------------------------------------------------------------------ grids
@dataclass
class NetworkGrid:
    """In-plane mapping between the CT grid (j, i) and the network grid (v, u), the same for every slice."""

    size: int
    spacing_mm: float
    center_ji: tuple[float, float]  # CT voxel (j, i) at the network grid's centre
    ct_spacing_ji: tuple[float, float]  # (dy, dx)
    ct_shape_ji: tuple[int, int]

    @classmethod
    def for_volume(cls, ct: CTVolume, brain: np.ndarray, size: int, spacing_mm: float) -> NetworkGrid:
        """Grid centred on the brain's bounding box (the image centre when the mask is empty)."""
        dx, dy, _ = ct.spacing
        nj, ni = ct.shape[1:]
        if brain.any():
            jj = np.flatnonzero(brain.any(axis=(0, 2)))
            ii = np.flatnonzero(brain.any(axis=(0, 1)))
            center = ((jj[0] + jj[-1]) / 2.0, (ii[0] + ii[-1]) / 2.0)
        else:
            center = ((nj - 1) / 2.0, (ni - 1) / 2.0)
        return cls(size, spacing_mm, (float(center[0]), float(center[1])), (dy, dx), (nj, ni))

    def ct_coords(self) -> tuple[np.ndarray, np.ndarray]:
        """CT (j, i) coordinates of the network pixels' centres (vectors along v and u)."""
        half = (self.size - 1) / 2.0
        steps = (np.arange(self.size) - half) * self.spacing_mm
        rows = self.center_ji[0] + steps / self.ct_spacing_ji[0]
        return rows, self.center_ji[1] + steps / self.ct_spacing_ji[1]

    def net_coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Network (v, u) coordinates of the CT pixels' centres (vectors along j and i)."""
        half = (self.size - 1) / 2.0
        dy, dx = self.ct_spacing_ji
        v = (np.arange(self.ct_shape_ji[0]) - self.center_ji[0]) * dy / self.spacing_mm + half
        u = (np.arange(self.ct_shape_ji[1]) - self.center_ji[1]) * dx / self.spacing_mm + half
        return v, u


def _sample_grid(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> torch.Tensor:
    """grid_sample grid (1, R, C, 2) sampling pixel coordinates rows x cols of an n_rows x n_cols image."""
    y = torch.as_tensor(rows / max(n_rows - 1, 1) * 2 - 1, dtype=torch.float32)
    x = torch.as_tensor(cols / max(n_cols - 1, 1) * 2 - 1, dtype=torch.float32)
    gy, gx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([gx, gy], -1)[None]


def to_network_grid(volume: np.ndarray, grid: NetworkGrid, fill: float = AIR_HU, mode: str = "bilinear",
                    batch: int = 8) -> np.ndarray:
    """Resample every slice of ``volume`` [k, j, i] onto the network grid -> float32 [k, size, size]."""
    rows, cols = grid.ct_coords()
    g = _sample_grid(rows, cols, *grid.ct_shape_ji)
    out = np.empty((volume.shape[0], grid.size, grid.size), np.float32)
    for k0 in range(0, volume.shape[0], batch):
        x = torch.as_tensor(np.asarray(volume[k0:k0 + batch], dtype=np.float32) - fill)[:, None]
        y = F.grid_sample(x, g.expand(x.shape[0], -1, -1, -1), mode=mode, padding_mode="zeros",
                          align_corners=True)
        out[k0:k0 + batch] = y[:, 0].numpy() + fill
    return out


def context_offset(spec_input: dict, slice_distance_mm: float) -> int:
    """Neighbour slice offset closest to ``context_mm`` (at least 1)."""
    return max(1, int(round(float(spec_input["context_mm"]) / max(slice_distance_mm, 1e-3))))


def make_channels(hu_net: np.ndarray, ks: np.ndarray | list[int], offset: int, windows: list[list[float]],
                  n_context: int = 1) -> np.ndarray:
    """Network input (len(ks), n_windows * (2 n_context + 1), H, W): windows x neighbour slices, in [0, 1]."""
    nk = hu_net.shape[0]
    chans = []
    for center, width in windows:
        lo = center - width / 2.0
        for d in range(-n_context, n_context + 1):
            idx = np.clip(np.asarray(ks) + d * offset, 0, nk - 1)
            chans.append(np.clip((hu_net[idx] - lo) / width, 0.0, 1.0))
    return np.stack(chans, axis=1).astype(np.float32)


# ------------------------------------------------------------------------------------------ prediction
def _top_mean(values: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of the ``k`` largest values inside ``mask`` per leading index: values (N, C, HW), mask (N, HW)."""
    masked = torch.where(mask[:, None, :], values, torch.zeros_like(values))
    k = max(1, min(k, masked.shape[-1]))
    return masked.topk(k, dim=-1).values.mean(-1)


def _grey_opening(x: torch.Tensor, radius: int) -> torch.Tensor:
    """In-plane grey-level opening (min then max filter over a square of side 2 radius + 1) of (N, C, H, W).

    Removes bright structures thinner than the square (e.g. the partial-volume rim along the inner table)
    while keeping the shape of thicker ones.
    """
    if radius <= 0:
        return x
    size = 2 * radius + 1
    eroded = -F.max_pool2d(-x, size, stride=1, padding=radius)
    return F.max_pool2d(eroded, size, stride=1, padding=radius)


def _ventricle_prior(prob: torch.Tensor, ventricles: torch.Tensor) -> torch.Tensor:
    """Move the IPH probability inside the ventricles (weights in [0, 1], (N, 1, H, W)) to IVH.

    Blood inside a ventricle is intraventricular by definition; the network, trained on few ventricle
    casts, tends to call it IPH. The any-blood probability is unchanged.
    """
    moved = prob[:, 1:2] * ventricles
    return torch.cat([prob[:, :1], prob[:, 1:2] - moved, prob[:, 2:3] + moved, prob[:, 3:]], 1)


def predict(ct: CTVolume, brain: np.ndarray, model: LoadedModel,
            progress: Callable[[str, float], None] | None = None,
            ventricles: np.ndarray | None = None) -> Prediction:
    """Segment hemorrhage (labels 1..5) and score every slice and the scan for any ICH and each subtype.

    ``ventricles`` (bool, CT grid; e.g. ``atlas.region_mask``): where given, hemorrhage the network calls
    IPH inside it is counted as IVH, in the labels and in the probabilities.
    """
    spec_in = model.spec["input"]
    brain = np.asarray(brain, dtype=bool)
    if brain.shape != ct.shape:
        raise ModelError(f"brain mask shape {brain.shape} does not match the CT {ct.shape}")
    if ventricles is not None and np.shape(ventricles) != ct.shape:
        raise ModelError(f"ventricle mask shape {np.shape(ventricles)} does not match the CT {ct.shape}")
    report = progress or (lambda _step, _fraction: None)
    nk = ct.shape[0]
    n_classes = MAX_LABEL + 1
    grid = NetworkGrid.for_volume(ct, brain, int(spec_in["size"]), float(spec_in["spacing_mm"]))
    report("resampling", 0.0)
    hu_net = to_network_grid(ct.hu, grid)
    brain_net = to_network_grid(brain.astype(np.float32), grid, fill=0.0) > 0.5
    vent_net = (None if ventricles is None
                else to_network_grid(np.asarray(ventricles, dtype=np.float32), grid, fill=0.0))
    offset = context_offset(spec_in, ct.spacing[2])
    windows = spec_in["windows"]
    n_context = int(spec_in.get("context_slices", 1))
    pixel_mm2 = float(spec_in["spacing_mm"]) ** 2
    top_k = max(1, int(round(float(model.spec["detection"]["top_area_mm2"]) / pixel_mm2)))
    batch = int(model.spec.get("inference_batch", 8))
    opening = int(model.spec["detection"].get("opening_px", 0))
    label_opening = int(model.spec["detection"].get("label_opening_px", opening))

    labels = np.zeros(ct.shape, np.uint8)
    slice_probs = np.zeros((nk, len(DETECTION_KEYS)), np.float32)
    v, u = grid.net_coords()
    js = np.flatnonzero(brain.any(axis=(0, 2)))
    is_ = np.flatnonzero(brain.any(axis=(0, 1)))
    active = np.flatnonzero(brain.any(axis=(1, 2)))
    if active.size:
        j0, j1, i0, i1 = js[0], js[-1] + 1, is_[0], is_[-1] + 1
        back = _sample_grid(v[j0:j1], u[i0:i1], grid.size, grid.size)
        with torch.inference_mode():
            for n0 in range(0, active.size, batch):
                ks = active[n0:n0 + batch]
                x = torch.as_tensor(make_channels(hu_net, ks, offset, windows, n_context)).to(model.device)
                prob = torch.softmax(model.network(x).float(), dim=1).cpu()  # (b, C, S, S)
                if vent_net is not None:
                    prob = _ventricle_prior(prob, torch.as_tensor(vent_net[ks])[:, None])
                # lesion maps (any, then each subtype), opened to drop structures thinner than the filter
                lesion = _grey_opening(torch.cat([1.0 - prob[:, :1], prob[:, 1:]], 1), opening)
                bmask = torch.as_tensor(brain_net[ks]).reshape(len(ks), -1)
                scores = _top_mean(lesion.reshape(len(ks), n_classes, -1), bmask, top_k)
                slice_probs[ks] = scores.numpy()
                # back onto the CT grid (brain bounding box only): argmax where the lesion map (opened with
                # the label opening, which may differ from the scores') says blood; zero outside the brain
                label_lesion = (lesion[:, :1] if label_opening == opening
                                else _grey_opening(1.0 - prob[:, :1], label_opening))
                both = torch.cat([prob, label_lesion], 1)
                native = F.grid_sample(both, back.expand(len(ks), -1, -1, -1), mode="bilinear",
                                       padding_mode="border", align_corners=True)
                lab = native[:, :n_classes].argmax(1).numpy().astype(np.uint8)
                lab[native[:, n_classes].numpy() < 0.5] = 0
                lab[~brain[ks, j0:j1, i0:i1]] = 0
                labels[ks, j0:j1, i0:i1] = lab
                report("segmenting", min(1.0, (n0 + len(ks)) / active.size))
    slice_probs = np.clip(slice_probs, 0.0, 1.0)
    scan = {key: float(slice_probs[:, c].max()) if nk else 0.0 for c, key in enumerate(DETECTION_KEYS)}
    return Prediction(labels=labels, slice_probabilities=slice_probs, scan_probabilities=scan,
                      model_name=model.name, model_version=model.version,
                      ventricle_prior=ventricles is not None)


@lru_cache(maxsize=1)
def default_model_available() -> bool:
    """Whether the default model's weights are installed (a cheap existence check, no hashing)."""
    try:
        spec = available_models()[0]
    except (ModelError, IndexError):
        return False
    return (MODELS_JSON.parent / str(spec["file"])).is_file()
