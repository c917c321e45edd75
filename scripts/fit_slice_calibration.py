#!/usr/bin/env python
"""Fit the slice calibration (logistic regression on per-slice features of the network's output) on the
real slice labels, and measure it by leave-one-series-out cross-validation.

Input: the JSON written by ``evaluate_model.py`` (per labelled slice: series, truth, features of the model
that never saw that series). Output: ``{"all": fit on every series (what ships), "loso": {series: fit
without that series}, "cv": cross-validated figures}``. ``evaluate_model.py --calibration`` then scores
each series with the fit that left it out.

Settings fixed before looking at any result: the ten features of ``inference.SLICE_FEATURES``, standardised
on the training series, L2 penalty 1.0 on the standardised weights, no class weighting, threshold 0.5.

Example:
  python scripts/fit_slice_calibration.py /work/cache-model/eval_v3_raw.json --out /work/cache-model/cal.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "ICHAnalyzer"))
sys.path.insert(0, str(REPO / "scripts"))

from ICHAnalyzerLib.constants import DETECTION_KEYS  # noqa: E402
from ICHAnalyzerLib.inference import SLICE_FEATURES, calibrate_slices  # noqa: E402

L2 = 1.0
THRESHOLD = 0.5


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = L2) -> dict:
    """L2-penalised logistic regression on standardised features -> a ``slice_calibration`` entry."""
    mean, std = x.mean(0), x.std(0)
    std[std < 1e-6] = 1.0
    z = (x - mean) / std

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        t = z @ w[1:] + w[0]
        p = 1.0 / (1.0 + np.exp(-t))
        nll = np.sum(np.logaddexp(0.0, t) - y * t)
        grad = np.concatenate([[np.sum(p - y)], z.T @ (p - y) + l2 * w[1:]])
        return nll + 0.5 * l2 * float(w[1:] @ w[1:]), grad

    res = minimize(loss, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B")
    return {"features": list(SLICE_FEATURES), "mean": mean.tolist(), "std": std.tolist(),
            "coef": res.x[1:].tolist(), "intercept": float(res.x[0]), "l2": l2, "n_slices": int(len(y)),
            "n_positive": int(y.sum())}


def main() -> None:
    from evaluate_model import auc, bootstrap_auc

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("evaluation", type=Path, help="evaluate_model.py JSON (without calibration)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    rows = json.loads(args.evaluation.read_text())["real"]["slices"]
    series = np.array([r["series"] for r in rows])
    x = np.array([r["features"] for r in rows], dtype=float)
    raw = np.array([[r["raw_prob"][k] for k in DETECTION_KEYS] for r in rows], dtype=float)
    truth = {k: np.array([r["truth"][k] for r in rows]) for k in DETECTION_KEYS}
    y = truth["any"].astype(float)

    loso, calibrated = {}, np.zeros_like(raw)
    for s in np.unique(series):
        train = series != s
        loso[str(s)] = fit_logistic(x[train], y[train])
        calibrated[~train] = calibrate_slices(x[~train], raw[~train], loso[str(s)])
    cv: dict = {"method": "leave-one-series-out over the 16 real series; AUC CI by series bootstrap",
                "slice_auc": {}, "slice_auc_uncalibrated": {}}
    for c, key in enumerate(DETECTION_KEYS):
        if truth[key].sum() == 0:
            continue
        cv["slice_auc"][key] = [auc(calibrated[:, c], truth[key]), *bootstrap_auc(calibrated[:, c], truth[key],
                                                                                  series)]
        cv["slice_auc_uncalibrated"][key] = auc(raw[:, c], truth[key])
    scan = {}
    for s in np.unique(series):
        m = series == s
        scan[str(s)] = {"positive": bool(y[m].any()), "scan_any": float(calibrated[m, 0].max())}
    cv["scan"] = scan
    cv["positives_flagged"] = sum(v["positive"] and v["scan_any"] >= THRESHOLD for v in scan.values())
    cv["normals_not_flagged"] = sum(not v["positive"] and v["scan_any"] < THRESHOLD for v in scan.values())
    pred = calibrated[:, 0] >= THRESHOLD
    cv["slice_sens_spec_any"] = [float(pred[y == 1].mean()), float((~pred[y == 0]).mean())]
    out = {"all": fit_logistic(x, y), "loso": loso, "cv": cv}
    args.out.write_text(json.dumps(out, indent=1))
    for key, (a, lo, hi) in cv["slice_auc"].items():
        print(f"{key:4s} AUC {a:.3f} ({lo:.3f}-{hi:.3f})  uncalibrated {cv['slice_auc_uncalibrated'][key]:.3f}")
    print(f"scan: positives flagged {cv['positives_flagged']}, normals not flagged {cv['normals_not_flagged']}; "
          f"slice sens/spec {cv['slice_sens_spec_any'][0]:.2f}/{cv['slice_sens_spec_any'][1]:.2f}")
    for s, v in scan.items():
        print(f"  {s[:11]} {'pos' if v['positive'] else 'neg'} scan any {v['scan_any']:.3f}")
    coef = dict(zip(SLICE_FEATURES, np.round(out["all"]["coef"], 2), strict=True))
    print("coefficients (standardised):", coef)


if __name__ == "__main__":
    main()
