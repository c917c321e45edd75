#!/usr/bin/env python
"""Evaluate the hemorrhage model (and the threshold baseline) on the 16 real labelled series and on
held-out synthetic insertions. Every series is scored by a model whose training never saw it:

- each normal series by the fold model trained on the other five normal hosts;
- the 6 positive series alternately by the two fold models (default, ``--positives-by folds``: every series
  then meets a model trained the same way, on 5 hosts),
  or by the full model (``--positives-by full``; trained on synthetic hemorrhage in the 10 normals only);
- synthetic insertions (native grid, fresh seeds) into a normal host by the fold model that did not train on
  (or insert training lesions into) that host.

Example:
  python scripts/evaluate_model.py --full ICHAnalyzer/ICHAnalyzerLib/models/ich-unet2d-3.pt \\
      --fold0 /work/cache-model/fold0.pt --fold1 /work/cache-model/fold1.pt \\
      --out /work/cache-model/eval.json --markdown /work/cache-model/eval.md --overlays docs/overlays
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "ICHAnalyzer"))
sys.path.insert(0, str(REPO / "scripts"))

from agreement import bootstrap_mean, icc_absolute_agreement  # noqa: E402
from ICHAnalyzerLib import synthesis  # noqa: E402
from ICHAnalyzerLib.baseline import threshold_baseline  # noqa: E402
from ICHAnalyzerLib.constants import DETECTION_KEYS, SUBTYPES  # noqa: E402
from ICHAnalyzerLib.figures import render_overlay  # noqa: E402
from ICHAnalyzerLib.inference import LoadedModel, build_network, predict  # noqa: E402
from ICHAnalyzerLib.pipeline import ventricle_prior  # noqa: E402
from train_model import (  # noqa: E402
    DEFAULT_DATA,
    DEFAULT_SPEC,
    fold_scoring_positive,
    hosts_for,
    load_spec,
    positive_series,
    read_series,
    read_slice_labels,
    series_table,
)

SCAN_THRESHOLD = 0.5  # fixed a priori, never tuned on these series
BASELINE_SCAN_ML = 1.0  # baseline flags a scan with at least this much blood-density volume (a priori)


def ventricles_for(ct, brain: np.ndarray, model: LoadedModel) -> np.ndarray | None:
    """The atlas ventricle mask the pipeline gives the model (``detection.ventricle_prior``), else None."""
    if not model.uses_ventricle_prior:
        return None
    prior = ventricle_prior(ct, brain)
    if prior.mask is None:
        raise SystemExit(f"ventricle prior asked for but {prior.note}")
    return prior.mask


def model_from_weights(path: Path, spec: dict, name: str) -> LoadedModel:
    net = build_network(spec["architecture"])
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    net.eval()
    entry = dict(spec, name=name, version=Path(path).stem)
    return LoadedModel(spec=entry, network=net, device=torch.device("cpu"))


def scorer_for(name: str, positive: bool, args: argparse.Namespace, fold_of: dict[str, str],
               positives: list[str]) -> str:
    """Which model scores a real series: never one that trained on it (or on lesions inserted into it)."""
    if not positive:
        return "fold1" if fold_of[name] == "fold0" else "fold0"
    if args.positives_by == "full":
        return "full"
    return fold_scoring_positive(positives.index(name))  # every series scored by a 5-host model


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties counted half)."""
    pos, neg = labels == 1, labels == 0
    if pos.sum() == 0 or neg.sum() == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * neg.sum()))


def bootstrap_auc(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, n: int = 2000,
                  seed: int = 0) -> tuple[float, float]:
    """95% CI of the AUC by resampling whole series (slices of a series are not independent)."""
    rng = np.random.default_rng(seed)
    uniq = np.unique(groups)
    index = {g: np.flatnonzero(groups == g) for g in uniq}
    values = []
    for _ in range(n):
        pick = np.concatenate([index[g] for g in rng.choice(uniq, size=uniq.size)])
        a = auc(scores[pick], labels[pick])
        if not np.isnan(a):
            values.append(a)
    if not values:
        return float("nan"), float("nan")
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def evaluate_real(args: argparse.Namespace, models: dict[str, LoadedModel]) -> dict:
    table = series_table(args.data)
    slice_truth = read_slice_labels(args.data)
    fold_of = {h: f for f in ("fold0", "fold1") for h in hosts_for(f, args.data)}
    positives = positive_series(args.data)
    rows, per_series = [], []
    for name in sorted(table):
        positive = int(table[name]["positive_slices_any"]) > 0
        model_key = scorer_for(name, positive, args, fold_of, positives)
        if model_key not in models:
            print(f"skip {name}: no held-out model ({model_key})")
            continue
        ct, brain = read_series(args.data / "rsna" / name, args.native_cache)
        model = models[model_key]
        ventricles = ventricles_for(ct, brain, model)  # registration, timed apart from the network
        t0 = time.time()
        pred = predict(ct, brain, model, ventricles=ventricles)
        seconds = time.time() - t0
        base = threshold_baseline(ct, brain)
        outside = int((pred.labels[~brain] > 0).sum())
        for s in ct.input_slices:
            uid = s.sop_instance_uid
            if uid not in slice_truth:
                continue
            k = int(np.clip(round(s.grid_k), 0, ct.shape[0] - 1))
            rows.append({"series": name, "uid": uid, "k": k, "truth": slice_truth[uid],
                         "prob": {key: float(pred.slice_probabilities[k, c])
                                  for c, key in enumerate(DETECTION_KEYS)},
                         "baseline_area_mm2": float(base.slice_area_mm2[k])})
        vols = {s.key: float((pred.labels == s.label).sum() * ct.voxel_volume_mm3 / 1000) for s in SUBTYPES}
        per_series.append({"series": name, "positive": positive, "scored_by": model_key,
                           "scan_probabilities": pred.scan_probabilities, "predicted_volumes_ml": vols,
                           "baseline_volume_ml": base.scan_volume_ml, "labels_outside_brain": outside,
                           "predict_seconds": round(seconds, 2)})
        print(f"{name[:11]} pos={positive} by={model_key} any={pred.scan_probabilities['any']:.3f} "
              f"vols={ {k: round(v, 1) for k, v in vols.items() if v > 0} } "
              f"base={base.scan_volume_ml:.1f} mL "
              f"outside={outside} {seconds:.1f}s", flush=True)
        if positive and args.overlays:
            ks = [r["k"] for r in rows if r["series"] == name and r["truth"]["any"]]
            ks = sorted(set(ks))
            ks = ks[:: max(1, len(ks) // 8)][:8]
            title = (f"{name[:11]}: predicted labels on labelled-positive slices "
                     f"(model {model.name})")
            out_png = args.overlays / f"{name[:11]}.png"
            layers = [(pred.labels == s.label, s.color, s.key) for s in SUBTYPES]
            render_overlay(ct, layers, out_png, slices=ks, columns=4, title=title)
    return {"slices": rows, "series": per_series}


def summarize_real(res: dict) -> dict:
    rows = res["slices"]
    groups = np.array([r["series"] for r in rows])
    out = {"slice_auc": {}, "slice_table": {}}
    for key in DETECTION_KEYS:
        y = np.array([r["truth"][key] for r in rows])
        p = np.array([r["prob"][key] for r in rows])
        entry = {"positives": int(y.sum()), "negatives": int((y == 0).sum())}
        if y.sum():
            entry["auc"] = auc(p, y)
            entry["ci95"] = bootstrap_auc(p, y, groups)
        pred = p >= SCAN_THRESHOLD
        entry.update(tp=int((pred & (y == 1)).sum()), fp=int((pred & (y == 0)).sum()),
                     fn=int((~pred & (y == 1)).sum()), tn=int((~pred & (y == 0)).sum()))
        out["slice_auc"][key] = entry
    # mean predicted slice probability by real slice label (a slice can carry several labels)
    for label in (*DETECTION_KEYS[1:], "none"):
        chosen = [r for r in rows if (r["truth"][label] if label != "none" else not r["truth"]["any"])]
        if chosen:
            means = {k: float(np.mean([r["prob"][k] for r in chosen])) for k in DETECTION_KEYS}
            out["slice_table"][label] = {"n": len(chosen), **means}
    y = np.array([r["truth"]["any"] for r in rows])
    b = np.array([r["baseline_area_mm2"] for r in rows])
    out["baseline_slice_auc_any"] = {"auc": auc(b, y), "ci95": bootstrap_auc(b, y, groups)}
    series = res["series"]
    pos = [s for s in series if s["positive"]]
    neg = [s for s in series if not s["positive"]]
    out["scan"] = {
        "positives_flagged": sum(s["scan_probabilities"]["any"] >= SCAN_THRESHOLD for s in pos),
        "positives": len(pos),
        "normals_not_flagged": sum(s["scan_probabilities"]["any"] < SCAN_THRESHOLD for s in neg),
        "normals": len(neg),
        "baseline_positives_flagged": sum(s["baseline_volume_ml"] >= BASELINE_SCAN_ML for s in pos),
        "baseline_normals_not_flagged": sum(s["baseline_volume_ml"] < BASELINE_SCAN_ML for s in neg),
        "labels_outside_brain_total": sum(s["labels_outside_brain"] for s in series),
    }
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return float(2 * (a & b).sum() / s) if s else 1.0


def evaluate_synthetic(args: argparse.Namespace, models: dict[str, LoadedModel]) -> list[dict]:
    bank = synthesis.load_shape_bank(str(args.shapes)) if args.shapes.exists() else None
    out = []
    for fold in ("fold0", "fold1"):
        scorer = "fold1" if fold == "fold0" else "fold0"
        if scorer not in models:
            continue
        for host in hosts_for(fold, args.data)[: args.synthetic_hosts]:
            ct, brain = read_series(args.data / "rsna" / host, args.native_cache)
            for label, n in ((label, n) for label in (1, 2, 3, 4, 5) for n in range(args.synthetic_per_host)):
                # the first insertion per host and subtype keeps the seed of single-insertion runs
                rng = np.random.default_rng([args.seed, int(host[3:11], 16), label] + ([n] if n else []))
                try:
                    ct2, truth, lesion = synthesis.insert_hemorrhage(ct, brain, label, rng, shape_bank=bank)
                except ValueError as exc:
                    print(f"  {host[:11]} label {label}: {exc}")
                    continue
                ventricles = ventricles_for(ct2, brain, models[scorer])
                pred = predict(ct2, brain, models[scorer], ventricles=ventricles)
                base = threshold_baseline(ct2, brain)
                t, p = truth == label, pred.labels == label
                vt, vp = t.sum(), p.sum()
                rec = {"host": host, "scored_by": scorer, "label": label, "insertion": n, "key": lesion.key,
                       "shape": lesion.shape, "true_ml": lesion.volume_ml,
                       "pred_ml": float(vp * ct.voxel_volume_mm3 / 1000),
                       "dice": dice(p, t), "dice_any_blood": dice(pred.labels > 0, truth > 0),
                       "volume_error": float((vp - vt) / vt),
                       "scan_prob": pred.scan_probabilities[lesion.key],
                       "baseline_dice_any_blood": dice(base.labels > 0, truth > 0),
                       "baseline_ml": float((base.labels > 0).sum() * ct.voxel_volume_mm3 / 1000),
                       "baseline_volume_error": float(((base.labels > 0).sum() - vt) / vt)}
                out.append(rec)
                print(f"  {host[:11]} {lesion.key:3s} {lesion.volume_ml:6.1f} mL -> {rec['pred_ml']:6.1f} mL "
                      f"dice {rec['dice']:.2f} (any {rec['dice_any_blood']:.2f}; baseline "
                      f"{rec['baseline_dice_any_blood']:.2f}) p={rec['scan_prob']:.2f}", flush=True)
    return out


def summarize_synthetic(recs: list[dict]) -> dict:
    out = {}
    for s in SUBTYPES:
        r = [x for x in recs if x["label"] == s.label]
        if not r:
            continue
        hosts = np.array([x["host"] for x in r])
        true_ml = np.array([x["true_ml"] for x in r])
        dices = np.array([x["dice"] for x in r])
        out[s.key] = {"n": len(r), "hosts": int(np.unique(hosts).size),
                      "dice_mean": float(dices.mean()),
                      "dice_mean_ci95": bootstrap_mean(dices, hosts),
                      "dice_median": float(np.median(dices)),
                      "dice_any_blood_mean": float(np.mean([x["dice_any_blood"] for x in r])),
                      "abs_volume_error_median": float(np.median([abs(x["volume_error"]) for x in r])),
                      "abs_volume_error_mean": float(np.mean([abs(x["volume_error"]) for x in r])),
                      "detected": int(sum(x["scan_prob"] >= SCAN_THRESHOLD for x in r)),
                      "volume_icc": icc_absolute_agreement(
                          np.stack([true_ml, [x["pred_ml"] for x in r]], 1)),
                      "baseline_dice_any_blood_mean":
                          float(np.mean([x["baseline_dice_any_blood"] for x in r])),
                      "baseline_abs_volume_error_median": float(np.median([abs(x["baseline_volume_error"])
                                                                           for x in r])),
                      "baseline_volume_icc": icc_absolute_agreement(
                          np.stack([true_ml, [x["baseline_ml"] for x in r]], 1))}
    return out


def markdown(summary: dict | None, synth: dict) -> str:
    lines = [] if summary is None else _markdown_real(summary)
    if synth:
        lines += ["| synthetic subtype | n (hosts) | Dice mean (95% CI, host bootstrap) / median | "
                  "any-blood Dice | median abs volume error | volume ICC(A,1) | detected | "
                  "baseline any-blood Dice | baseline median abs volume error | baseline volume ICC(A,1) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for key, e in synth.items():
            ci = e["dice_mean_ci95"]
            lines.append(f"| {key} | {e['n']} ({e['hosts']}) | {e['dice_mean']:.3f} "
                         f"({ci[0]:.2f}-{ci[1]:.2f}) / {e['dice_median']:.3f} | "
                         f"{e['dice_any_blood_mean']:.3f} | {100 * e['abs_volume_error_median']:.1f}% | "
                         f"{e['volume_icc']:.3f} | "
                         f"{e['detected']}/{e['n']} | {e['baseline_dice_any_blood_mean']:.3f} | "
                         f"{100 * e['baseline_abs_volume_error_median']:.1f}% | "
                         f"{e['baseline_volume_icc']:.3f} |")
    return "\n".join(lines) + "\n"


def _markdown_real(summary: dict) -> list[str]:
    lines = ["| finding | positive / negative slices | model AUC (95% CI, series bootstrap) "
             "| sens / spec at 0.5 |",
             "|---|---|---|---|"]
    for key, e in summary["slice_auc"].items():
        if "auc" not in e:
            continue
        sens = e["tp"] / max(1, e["tp"] + e["fn"])
        spec = e["tn"] / max(1, e["tn"] + e["fp"])
        lines.append(f"| {key} | {e['positives']} / {e['negatives']} | {e['auc']:.3f} "
                     f"({e['ci95'][0]:.3f}-{e['ci95'][1]:.3f}) | {sens:.2f} / {spec:.2f} |")
    b = summary["baseline_slice_auc_any"]
    lines.append(f"| any (threshold baseline) | | {b['auc']:.3f} ({b['ci95'][0]:.3f}-{b['ci95'][1]:.3f}) | |")
    lines += ["", "| slices labelled | n | " + " | ".join(f"p({k})" for k in DETECTION_KEYS) + " |",
              "|---|---|" + "---|" * len(DETECTION_KEYS)]
    for label, e in summary["slice_table"].items():
        lines.append(f"| {label} | {e['n']} | " + " | ".join(f"{e[k]:.2f}" for k in DETECTION_KEYS) + " |")
    sc = summary["scan"]
    lines += ["", f"Scan level (any >= {SCAN_THRESHOLD}): positives flagged {sc['positives_flagged']}/"
              f"{sc['positives']}, normals not flagged {sc['normals_not_flagged']}/{sc['normals']}; baseline "
              f"(>= {BASELINE_SCAN_ML} mL): {sc['baseline_positives_flagged']}/{sc['positives']} and "
              f"{sc['baseline_normals_not_flagged']}/{sc['normals']}. Label voxels outside the brain mask: "
              f"{sc['labels_outside_brain_total']}.", ""]
    return lines


def main() -> None:
    warnings.filterwarnings("ignore", module="pydicom")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", type=Path, required=True, help="weights trained on all ten normal hosts")
    p.add_argument("--fold0", type=Path, help="weights trained on the fold0 hosts")
    p.add_argument("--fold1", type=Path, help="weights trained on the fold1 hosts")
    p.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--native-cache", type=Path, default=None)
    p.add_argument("--shapes", type=Path,
                   default=REPO.parent / "shared/data/lesion-shapes/blast-ct_scan_0_segmentation.nii.gz")
    p.add_argument("--synthetic-hosts", type=int, default=5, help="hosts per fold for synthetic insertions")
    p.add_argument("--synthetic-per-host", type=int, default=1,
                   help="insertions per host and subtype (the first keeps the single-insertion seed)")
    p.add_argument("--positives-by", choices=["full", "folds"], default="folds",
                   help="score the positive series by the full model or alternately by the fold models")
    p.add_argument("--opening-px", type=int, default=None,
                   help="override the spec's in-plane opening of the lesion maps for the scores")
    p.add_argument("--label-opening-px", type=int, default=None,
                   help="override the spec's opening of the any-lesion map that decides the labels")
    p.add_argument("--ventricle-prior", choices=["spec", "on", "off"], default="spec",
                   help="IPH inside the registered atlas ventricles counted as IVH (as the pipeline does "
                        "when the spec's detection.ventricle_prior is set)")
    p.add_argument("--skip-real", action="store_true")
    p.add_argument("--skip-synthetic", action="store_true")
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("/work/cache-model/eval.json"))
    p.add_argument("--markdown", type=Path, default=None)
    p.add_argument("--overlays", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    spec = load_spec(args.spec)
    for key in ("opening_px", "label_opening_px"):
        if getattr(args, key) is not None:
            spec["detection"] = dict(spec["detection"], **{key: getattr(args, key)})
    if args.ventricle_prior != "spec":
        spec["detection"] = dict(spec["detection"], ventricle_prior=args.ventricle_prior == "on")
    models = {"full": model_from_weights(args.full, spec, "full")}
    for key in ("fold0", "fold1"):
        if getattr(args, key):
            models[key] = model_from_weights(getattr(args, key), spec, key)
    result: dict = {"scan_threshold": SCAN_THRESHOLD, "detection": spec["detection"]}
    if not args.skip_real:
        real = evaluate_real(args, models)
        result["real"] = real
        result["real_summary"] = summarize_real(real)
    if not args.skip_synthetic:
        synth = evaluate_synthetic(args, models)
        result["synthetic"] = synth
        result["synthetic_summary"] = summarize_synthetic(synth)
    args.out.write_text(json.dumps(result, indent=1))
    text = markdown(result.get("real_summary"), result.get("synthetic_summary", {}))
    if args.markdown:
        args.markdown.write_text(text)
    print(text)
    print(json.dumps({k: v for k, v in result.items() if k.endswith("summary")}, indent=1))


if __name__ == "__main__":
    main()
