"""Model registry, weight checks and the predict contract (grid, mask, probability shapes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from ICHAnalyzerLib import inference
from ICHAnalyzerLib.constants import DETECTION_KEYS, SUBTYPE_BY_LABEL
from ICHAnalyzerLib.errors import ModelError
from ICHAnalyzerLib.inference import (
    MODELS_JSON,
    NetworkGrid,
    available_models,
    load_model,
    predict,
    sha256_file,
    to_network_grid,
)
from ICHAnalyzerLib.volume import CTVolume

TINY_SPEC = {
    "name": "tiny-test",
    "version": "0",
    "file": "tiny.pt",
    "labels": {str(k): v.key for k, v in SUBTYPE_BY_LABEL.items()},
    "input": {"spacing_mm": 2.0, "size": 64, "context_mm": 5.0, "context_slices": 1,
              "windows": [[40.0, 80.0], [80.0, 200.0]]},
    "architecture": {"type": "UNet", "spatial_dims": 2, "in_channels": 6, "out_channels": 6,
                     "channels": [4, 8], "strides": [2], "num_res_units": 0},
    "detection": {"top_area_mm2": 12.0},
}


@pytest.fixture()
def tiny_registry(tmp_path: Path) -> Path:
    """A registry with a tiny randomly initialised network (tests the contract, not accuracy)."""
    torch.manual_seed(0)
    net = inference.build_network(TINY_SPEC["architecture"])
    torch.save(net.state_dict(), tmp_path / "tiny.pt")
    entry = dict(TINY_SPEC, sha256=sha256_file(tmp_path / "tiny.pt"))
    registry = tmp_path / "Models.json"
    registry.write_text(json.dumps({"models": [entry]}))
    return registry


def small_ct(tilt_deg: float = 0.0) -> tuple[CTVolume, np.ndarray]:
    rng = np.random.default_rng(0)
    nk, nj, ni = 7, 90, 80
    kk, jj, ii = np.mgrid[:nk, :nj, :ni]
    r = np.hypot((jj - 45) / 40.0, (ii - 40) / 34.0)
    hu = np.where(r < 1.0, 1000.0, -1000.0)
    brain = r < 0.9
    hu[brain] = 35.0
    hu = (hu + rng.normal(0, 5, hu.shape)).astype(np.int16)
    t = np.radians(tilt_deg)
    affine = np.array([[1.7, 0, 0, -60], [0, 1.9, 5 * np.sin(t), -80], [0, 0, 5 * np.cos(t), 10],
                       [0, 0, 0, 1]])
    return CTVolume(hu=hu, affine=affine), brain


# ------------------------------------------------------------------------------------------ registry
def test_shipped_models_json_is_valid_and_weights_match():
    entries = available_models()
    assert entries, "Models.json lists no model"
    total = 0
    for e in entries:
        for key in ("name", "version", "file", "sha256", "labels", "input", "architecture", "detection"):
            assert key in e, f"{e.get('name')}: missing {key}"
        assert e["labels"] == {str(k): v.key for k, v in SUBTYPE_BY_LABEL.items()}
        weights = MODELS_JSON.parent / e["file"]
        assert weights.is_file()
        assert sha256_file(weights) == e["sha256"]
        total += weights.stat().st_size
        n_windows = len(e["input"]["windows"])
        assert e["architecture"]["in_channels"] == n_windows * (2 * e["input"]["context_slices"] + 1)
        assert e["architecture"]["out_channels"] == 6
    assert total <= 30 * 1024 * 1024


def test_load_default_model_on_cpu():
    model = load_model(device="cpu")
    assert model.name == available_models()[0]["name"]
    assert not model.network.training


def test_missing_weights_raise_model_error(tiny_registry):
    (tiny_registry.parent / "tiny.pt").unlink()
    with pytest.raises(ModelError, match="missing"):
        load_model(registry=tiny_registry)


def test_corrupt_weights_raise_model_error(tiny_registry):
    weights = tiny_registry.parent / "tiny.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="corrupt"):
        load_model(registry=tiny_registry)


def test_weights_not_matching_architecture_raise_model_error(tiny_registry):
    weights = tiny_registry.parent / "tiny.pt"
    torch.save({"bogus": torch.zeros(3)}, weights)
    spec = json.loads(tiny_registry.read_text())
    spec["models"][0]["sha256"] = sha256_file(weights)
    tiny_registry.write_text(json.dumps(spec))
    with pytest.raises(ModelError, match="cannot be loaded"):
        load_model(registry=tiny_registry)


def test_unknown_model_and_bad_registry(tiny_registry, tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model("nope", registry=tiny_registry)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(registry=bad)
    with pytest.raises(ModelError, match="not found"):
        load_model(registry=tmp_path / "absent.json")
    assert available_models(tmp_path / "absent.json") == []


def test_model_error_message_is_one_line(tiny_registry):
    (tiny_registry.parent / "tiny.pt").unlink()
    with pytest.raises(ModelError) as err:
        load_model(registry=tiny_registry)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------ grids
def test_network_grid_round_trip_is_exact_at_matching_points():
    ct, brain = small_ct()
    grid = NetworkGrid.for_volume(ct, brain, size=64, spacing_mm=1.7 / 2)  # 2 network pixels per CT column
    v, u = grid.net_coords()
    rows, cols = grid.ct_coords()
    # CT pixel centres map to network coordinates and back (both maps are affine and mutually inverse)
    slope_r, icpt_r = np.polyfit(np.arange(64), rows, 1)
    slope_c, icpt_c = np.polyfit(np.arange(64), cols, 1)
    assert np.allclose(icpt_r + slope_r * v, np.arange(ct.shape[1]), atol=1e-6)
    assert np.allclose(icpt_c + slope_c * u, np.arange(ct.shape[2]), atol=1e-6)
    ramp = np.broadcast_to(np.arange(ct.shape[2], dtype=np.float32), ct.shape)
    net = to_network_grid(ramp, grid, fill=-1.0)
    inside = (cols >= 0) & (cols <= ct.shape[2] - 1)
    assert np.allclose(net[0, 32, inside], cols[inside], atol=1e-4)
    assert np.allclose(u, (np.arange(ct.shape[2]) - grid.center_ji[1]) * 1.7 / (1.7 / 2) + 31.5)


# ------------------------------------------------------------------------------------------ predict
@pytest.mark.parametrize("tilt", [0.0, 18.0])
def test_predict_contract_on_small_volume(tiny_registry, tilt):
    ct, brain = small_ct(tilt)
    model = load_model(registry=tiny_registry, device="cpu")
    steps = []
    pred = predict(ct, brain, model, progress=lambda step, f: steps.append((step, f)))
    assert pred.labels.shape == ct.shape and pred.labels.dtype == np.uint8
    assert not pred.labels[~brain].any()
    assert pred.labels.max() <= 5
    assert pred.slice_probabilities.shape == (ct.shape[0], len(DETECTION_KEYS))
    assert np.all((pred.slice_probabilities >= 0) & (pred.slice_probabilities <= 1))
    assert set(pred.scan_probabilities) == set(DETECTION_KEYS)
    assert all(0.0 <= p <= 1.0 for p in pred.scan_probabilities.values())
    assert pred.scan_probabilities["any"] == pytest.approx(pred.slice_probabilities[:, 0].max())
    assert (pred.model_name, pred.model_version) == ("tiny-test", "0")
    assert steps and steps[-1][1] == pytest.approx(1.0)


def test_predict_rejects_mismatched_mask(tiny_registry):
    ct, brain = small_ct()
    model = load_model(registry=tiny_registry, device="cpu")
    with pytest.raises(ModelError):
        predict(ct, brain[:-1], model)


def test_predict_empty_mask_gives_empty_labels(tiny_registry):
    ct, brain = small_ct()
    model = load_model(registry=tiny_registry, device="cpu")
    pred = predict(ct, np.zeros_like(brain), model)
    assert not pred.labels.any()
    assert pred.scan_probabilities["any"] == 0.0


def test_registry_copy_with_shipped_weights_loads(tmp_path):
    """The shipped entry is self-contained: registry + weights copied elsewhere still load."""
    entry = available_models()[0]
    shutil.copy(MODELS_JSON.parent / entry["file"], tmp_path / entry["file"])
    (tmp_path / "Models.json").write_text(json.dumps({"models": [entry]}))
    assert load_model(registry=tmp_path / "Models.json", device="cpu").name == entry["name"]


def test_label_opening_only_changes_the_labels(tiny_registry, tmp_path):
    """A smaller opening for the labels than for the scores keeps the scores and labels a superset
    (opening by a 3x3 square is never below opening by a 5x5 one)."""
    entry = json.loads(tiny_registry.read_text())["models"][0]
    ct, brain = small_ct()
    preds = {}
    for label_opening in (2, 1):
        entry["detection"] = dict(entry["detection"], opening_px=2, label_opening_px=label_opening)
        registry = tmp_path / f"open{label_opening}.json"
        registry.write_text(json.dumps({"models": [entry]}))
        preds[label_opening] = predict(ct, brain, load_model(registry=registry, device="cpu"))
    assert np.array_equal(preds[1].slice_probabilities, preds[2].slice_probabilities)
    wide, narrow = preds[1].labels > 0, preds[2].labels > 0
    assert not (narrow & ~wide).any()
    # a 4-pixel-wide stripe (a thin rim) survives the 3x3 opening but not the 5x5 one
    stripe = torch.zeros(1, 1, 20, 20)
    stripe[..., 8:12, :] = 1.0
    assert inference._grey_opening(stripe, 1)[0, 0, 8:12, 2:18].min() == 1.0
    assert inference._grey_opening(stripe, 2).max() == 0.0


def test_ventricle_prior_moves_iph_to_ivh_only():
    """IPH probability inside the ventricles becomes IVH; outside, and for every other class, nothing
    changes; the any-blood probability (1 - background) is untouched."""
    prob = torch.softmax(torch.randn(2, 6, 8, 8), 1)
    weights = torch.zeros(2, 1, 8, 8)
    weights[..., 2:5, 3:6] = 1.0
    weights[..., 6, 6] = 0.25  # partial volume at the ventricle's edge (bilinear resampling)
    out = inference._ventricle_prior(prob, weights)
    assert torch.allclose(out.sum(1), prob.sum(1))
    assert torch.equal(out[:, [0, 3, 4, 5]], prob[:, [0, 3, 4, 5]])
    assert torch.all(out[..., 2:5, 3:6][:, 1] == 0)
    assert torch.allclose(out[..., 2:5, 3:6][:, 2], prob[..., 2:5, 3:6][:, 1] + prob[..., 2:5, 3:6][:, 2])
    assert torch.allclose(out[:, 1, 6, 6], 0.75 * prob[:, 1, 6, 6])
    outside = weights[:, 0] == 0
    assert torch.equal(out[:, 1][outside], prob[:, 1][outside])


def test_predict_with_ventricles_everywhere_never_labels_iph(tiny_registry):
    ct, brain = small_ct()
    model = load_model(registry=tiny_registry, device="cpu")
    plain = predict(ct, brain, model)
    prior = predict(ct, brain, model, ventricles=np.ones(ct.shape, bool))
    assert not plain.ventricle_prior and prior.ventricle_prior
    assert not (prior.labels == 1).any()
    # IPH and IVH evidence add up: what was blood stays blood, what was IPH or IVH is now IVH
    assert not ((plain.labels > 0) & (prior.labels == 0)).any()
    assert not (np.isin(plain.labels, (1, 2)) & (prior.labels != 2)).any()
    assert np.array_equal(plain.slice_probabilities[:, 0], prior.slice_probabilities[:, 0])
    assert np.all(prior.slice_probabilities[:, 1] < 1e-6)
    with pytest.raises(ModelError):
        predict(ct, brain, model, ventricles=brain[:-1])
