"""Training helpers (scripts/train_model.py, scripts/evaluate_model.py): the weak-supervision loss and the
rule that no model learns from a series it is evaluated on."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import train_model  # noqa: E402


def _logits_with_blood(inside_brain: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One 32x32 slice: background everywhere except a 6x6 patch called IPH with high confidence."""
    logits = torch.zeros(1, 6, 32, 32)
    logits[:, 0] = 5.0
    logits[0, 1, 4:10, 4:10] = 10.0
    brain = torch.zeros(1, 32, 32, dtype=torch.bool)
    if inside_brain:
        brain[0, 2:30, 2:30] = True
    else:
        brain[0, 14:30, 14:30] = True
    return logits, brain


def test_mil_loss_scores_the_slice_from_its_brightest_brain_pixels():
    iph_slice = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    normal_slice = torch.zeros(1, 6)
    logits, brain = _logits_with_blood(inside_brain=True)
    right = train_model.mil_loss(logits, brain, iph_slice)
    wrong = train_model.mil_loss(logits, brain, normal_slice)
    assert right < 0.1 < wrong
    # the same blood outside the brain mask does not count: the IPH label is then badly explained
    logits_out, brain_out = _logits_with_blood(inside_brain=False)
    assert train_model.mil_loss(logits_out, brain_out, iph_slice) > wrong / 2
    assert train_model.mil_loss(logits_out, brain_out, normal_slice) < 0.1


def test_no_model_learns_the_slice_labels_of_a_series_it_scores(shared_cache):
    import evaluate_model

    positives = train_model.positive_series_for("all", shared_cache)
    assert len(positives) == 6
    fold_of: dict[str, str] = {}
    args = type("Args", (), {"positives_by": "folds"})()
    scored = {f: {s for s in positives if evaluate_model.scorer_for(s, True, args, fold_of, positives) == f}
              for f in ("fold0", "fold1")}
    for fold in ("fold0", "fold1"):
        learned = set(train_model.positive_series_for(fold, shared_cache))
        assert learned and not learned & scored[fold]
        assert learned | scored[fold] == set(positives)


def test_negative_slices_keep_away_from_labelled_hemorrhage(tmp_path):
    """Only slices labelled free of hemorrhage, and not next to a labelled one, become negatives."""
    import csv

    import numpy as np

    nk = 10
    positive_ks = {4, 5}
    (tmp_path / "net").mkdir()
    (tmp_path / "rsna").mkdir()
    uids = [f"ID_s{k}" for k in range(nk)]
    hu = np.full((nk, 64, 64), -1000, np.int16)
    hu[:, 8:56, 8:56] = 35
    np.savez(tmp_path / "net" / "series.npz", hu=hu, brain=hu > 0, dz=5.0, uids=np.array(uids),
             grid_k=np.arange(nk, dtype=float))
    columns = list(train_model.SLICE_LABEL_COLUMNS.values())
    with open(tmp_path / "rsna" / "slice_labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sop_file", *columns])
        for k, uid in enumerate(uids):
            if k == 8:
                continue  # an unlabelled slice is never used either
            writer.writerow([f"{uid}.dcm", *[int(k in positive_ks)] * len(columns)])
    spec = train_model.load_spec(train_model.DEFAULT_SPEC)
    sampler = train_model.Sampler.__new__(train_model.Sampler)
    sampler.spec_in, sampler.clean = spec["input"], []
    assert sampler.add_negative_slices(tmp_path, tmp_path, ["series"], margin=1) == 5
    assert sampler.clean[0][3].tolist() == [0, 1, 2, 7, 9]


def test_widened_network_starts_as_the_original():
    """A spec with one more window (3 more input channels): the widened weights compute exactly what the
    original network did, whatever the new channels hold."""
    import copy

    from ICHAnalyzerLib.inference import build_network

    spec = train_model.load_spec(train_model.DEFAULT_SPEC)
    small = build_network(dict(spec["architecture"], channels=[4, 8], strides=[2]))
    wide_arch = dict(spec["architecture"], channels=[4, 8], strides=[2],
                     in_channels=spec["architecture"]["in_channels"] + 3)
    wide = build_network(wide_arch)
    state = copy.deepcopy(small.state_dict())
    wide.load_state_dict(train_model.widen_inputs(state, wide.state_dict()))
    small.eval()
    wide.eval()
    x = torch.rand(2, wide_arch["in_channels"], 32, 32)
    with torch.no_grad():
        assert torch.allclose(small(x[:, :-3]), wide(x), atol=1e-6)
    assert torch.equal(state["model.0.conv.unit0.conv.weight"],
                       small.state_dict()["model.0.conv.unit0.conv.weight"])  # the input is not modified


def test_icc_absolute_agreement_matches_shrout_fleiss_and_penalises_offsets():
    import numpy as np
    from agreement import icc_absolute_agreement

    # Shrout & Fleiss (1979), table 2: 6 targets x 4 judges; ICC(2,1) = 0.29 in the paper
    ratings = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])
    assert abs(icc_absolute_agreement(ratings) - 0.29) < 0.005
    true_ml = np.array([2.0, 8.0, 15.0, 30.0, 55.0, 80.0])
    assert icc_absolute_agreement(np.stack([true_ml, true_ml], 1)) == 1.0
    # a rater that is perfectly correlated but 10 mL high agrees less than one with small random errors
    offset = icc_absolute_agreement(np.stack([true_ml, true_ml + 10.0], 1))
    noisy = icc_absolute_agreement(np.stack([true_ml, true_ml + [1.0, -1.0, 0.5, -0.5, 1.0, -1.0]], 1))
    assert offset < 0.97 < noisy < 1.0


def test_bootstrap_mean_resamples_whole_hosts():
    import numpy as np
    from agreement import bootstrap_mean

    # two hosts with very different scores: the CI spans both host means, not the width of one host
    values = np.array([0.9, 0.9, 0.9, 0.3, 0.3, 0.3])
    hosts = np.array(["a", "a", "a", "b", "b", "b"])
    lo, hi = bootstrap_mean(values, hosts)
    assert lo == 0.3 and hi == 0.9
    assert np.isnan(bootstrap_mean(values, np.array(["a"] * 6))[0])


def test_alternating_crop_sizes_parse_and_reject_bad_values():
    import pytest

    assert train_model.parse_alternating("128,256") == [128, 256]
    assert train_model.parse_alternating(160) == [160]
    for bad in ("128,", "0", "a,b"):
        with pytest.raises(SystemExit):
            train_model.parse_alternating(bad)
