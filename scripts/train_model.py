#!/usr/bin/env python
"""Train the 2.5D hemorrhage segmentation network on synthetic hemorrhage inserted into real normal CT.

Steps (each cached outside the repository, default /work/cache-model):
  prepare  read the 16 labelled series, brain masks, resample onto the network grid -> CACHE/net/<series>.npz
  synth    insert synthetic hemorrhage into normal hosts on the network grid -> CACHE/synth/<series>_<n>.npz
  train    train on the synthetic cases (+ clean host slices as negatives) of the given hosts -> weights .pt

Examples:
  python scripts/train_model.py prepare
  python scripts/train_model.py synth --cases 40
  python scripts/train_model.py train --hosts fold0 --steps 3000 --out /work/cache-model/fold0.pt
  python scripts/train_model.py train --hosts all --steps 5000 --out ICHAnalyzer/ICHAnalyzerLib/models/x.pt
Normal hosts are split by series into fold0 / fold1 (alternating in sorted order); ``all`` uses all ten.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "ICHAnalyzer"))

from ICHAnalyzerLib import synthesis  # noqa: E402
from ICHAnalyzerLib.constants import DETECTION_KEYS  # noqa: E402
from ICHAnalyzerLib.inference import (  # noqa: E402
    NetworkGrid,
    _top_mean,
    build_network,
    context_offset,
    make_channels,
    to_network_grid,
)
from ICHAnalyzerLib.volume import CTVolume  # noqa: E402

DEFAULT_CACHE = Path(os.environ.get("ICH_MODEL_CACHE", "/work/cache-model"))
DEFAULT_DATA = Path(os.environ.get("ICH_SHARED_CACHE", Path.home() / ".cache" / "ichanalyzer-shared"))
DEFAULT_SPEC = REPO / "scripts" / "model_spec.json"
SHARED = Path(os.environ.get("ICH_SHARED_DIR", REPO.parent / "shared"))


def load_spec(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def series_table(data: Path) -> dict[str, dict]:
    with open(data / "rsna" / "series.csv") as f:
        return {row["series_dir"]: row for row in csv.DictReader(f)}


def normal_hosts(data: Path) -> list[str]:
    return sorted(s for s, row in series_table(data).items() if int(row["positive_slices_any"]) == 0)


def positive_series(data: Path) -> list[str]:
    return sorted(s for s, row in series_table(data).items() if int(row["positive_slices_any"]) > 0)


def fold_scoring_positive(index: int) -> str:
    """The fold model that scores the ``index``-th positive series (sorted) in the evaluation."""
    return ("fold0", "fold1")[index % 2]


SLICE_LABEL_COLUMNS = {"any": "any", "IPH": "intraparenchymal", "IVH": "intraventricular",
                       "SAH": "subarachnoid", "SDH": "subdural", "EDH": "epidural"}


def read_slice_labels(data: Path) -> dict[str, dict[str, int]]:
    """Expert slice labels by SOPInstanceUID (file stem): {uid: {"any": 0/1, "IPH": 0/1, ...}}."""
    with open(data / "rsna" / "slice_labels.csv") as f:
        return {Path(r["sop_file"]).stem: {k: int(r[c]) for k, c in SLICE_LABEL_COLUMNS.items()}
                for r in csv.DictReader(f)}


def labelled_slices(cached: dict, labels: dict[str, dict[str, int]]) -> Iterator[tuple[int, dict[str, int]]]:
    """(grid slice k, expert labels) of every input slice of a prepared series that has slice labels."""
    nk = cached["hu"].shape[0]
    for uid, gk in zip(cached["uids"], cached["grid_k"], strict=True):
        if str(uid) in labels:
            yield int(np.clip(round(float(gk)), 0, nk - 1)), labels[str(uid)]


def head_slices(hu: np.ndarray) -> np.ndarray:
    """Slices holding head (not just air or table): candidates for negative crops, skull base and vertex
    included."""
    return (hu > -300).sum(axis=(1, 2)) > 2000


def hosts_for(spec: str, data: Path) -> list[str]:
    normals = normal_hosts(data)
    if spec == "all":
        return normals
    if spec in ("fold0", "fold1"):
        return normals[int(spec[-1])::2]
    return [h for h in spec.split(",") if h]


def read_series(folder: Path, native_cache: Path | None) -> tuple[CTVolume, np.ndarray]:
    """CT volume and brain mask: from a pre-read cache (prototype reader) or the library's reader/masker."""
    if native_cache is not None:
        d = np.load(native_cache / f"{folder.name}.npz")
        from ICHAnalyzerLib.volume import InputSlice

        slices = [InputSlice(index=n, z_mm=0.0, grid_k=float(g), sop_instance_uid=str(u))
                  for n, (g, u) in enumerate(zip(d["grid_k"], d["uids"], strict=True))]
        return CTVolume(hu=d["hu"], affine=d["affine"], input_slices=slices, source=str(folder)), d["mask"]
    from ICHAnalyzerLib.brainmask import brain_mask
    from ICHAnalyzerLib.io import load_ct

    ct = load_ct(folder)
    return ct, brain_mask(ct)


def network_affine(ct: CTVolume, grid: NetworkGrid) -> np.ndarray:
    """IJK->LPS affine of the network grid (u, v, k) of a CT."""
    dy, dx = grid.ct_spacing_ji
    s = grid.spacing_mm
    half = (grid.size - 1) / 2.0
    m = np.eye(4)
    m[0, 0], m[1, 1] = s / dx, s / dy
    m[0, 3] = grid.center_ji[1] - half * s / dx
    m[1, 3] = grid.center_ji[0] - half * s / dy
    return ct.affine @ m


# ------------------------------------------------------------------------------------------ prepare
def cmd_prepare(args: argparse.Namespace) -> None:
    spec = load_spec(args.spec)
    out = args.cache / "net"
    out.mkdir(parents=True, exist_ok=True)
    for name in tqdm(sorted(series_table(args.data)), desc="prepare"):
        ct, brain = read_series(args.data / "rsna" / name, args.native_cache)
        grid = NetworkGrid.for_volume(ct, brain, spec["input"]["size"], spec["input"]["spacing_mm"])
        hu_net = np.round(to_network_grid(ct.hu, grid)).astype(np.int16)
        brain_net = to_network_grid(brain.astype(np.float32), grid, fill=0.0) > 0.5
        np.savez(out / f"{name}.npz", hu=hu_net, brain=brain_net, affine=network_affine(ct, grid),
                 dz=ct.spacing[2], uids=np.array([s.sop_instance_uid or "" for s in ct.input_slices]),
                 grid_k=np.array([s.grid_k for s in ct.input_slices]))


# ------------------------------------------------------------------------------------------ synth
def cmd_synth(args: argparse.Namespace) -> None:
    spec = load_spec(args.spec)
    out = args.cache / args.synth_dir
    out.mkdir(parents=True, exist_ok=True)
    bank = synthesis.load_shape_bank(str(args.shapes)) if args.shapes.exists() else None
    hosts = hosts_for(args.hosts, args.data)
    for h_idx, host in enumerate(hosts):
        d = np.load(args.cache / "net" / f"{host}.npz")
        ct = CTVolume(hu=d["hu"], affine=d["affine"])
        brain = d["brain"]
        offset = context_offset(spec["input"], float(d["dz"]))
        for n in tqdm(range(args.cases), desc=f"synth {host[:11]} ({h_idx + 1}/{len(hosts)})"):
            path = out / f"{host}_{n:03d}.npz"
            if path.exists():
                continue
            seed = [args.seed, int(host[3:11], 16), n]
            rng = np.random.default_rng(seed)
            ct2, lab, lesions = synthesis.synthesize_case(ct, brain, rng, shape_bank=bank)
            ks = np.flatnonzero(lab.any(axis=(1, 2)))
            if ks.size == 0:
                continue
            k0, k1 = max(0, ks[0] - offset), min(ct.shape[0], ks[-1] + offset + 1)
            np.savez(path, hu=ct2.hu[k0:k1], labels=lab[k0:k1], brain=brain[k0:k1], k0=k0,
                     at_start=k0 == 0, at_end=k1 == ct.shape[0], offset=offset,
                     lesions=json.dumps([vars(x) for x in lesions]))


# ------------------------------------------------------------------------------------------ train
class Sampler:
    """2.5D training samples: synthetic lesion slices and clean host slices, random crops and flips."""

    def __init__(self, spec: dict, cache: Path, hosts: list[str], rng: np.random.Generator,
                 crop: int, synth_dir: str = "synth", balance_subtypes: bool = False) -> None:
        self.spec_in = spec["input"]
        self.windows = self.spec_in["windows"]
        self.n_context = int(self.spec_in.get("context_slices", 1))
        self.rng, self.crop = rng, crop
        self.cases: list[tuple] = []
        self.clean: list[tuple] = []  # (hu, brain, offset, slices that may serve as negatives)
        paths: list[Path] = []
        for host in hosts:
            d = np.load(cache / "net" / f"{host}.npz")
            head_ks = np.flatnonzero(head_slices(d["hu"]))
            self.clean.append((d["hu"], d["brain"], context_offset(self.spec_in, float(d["dz"])), head_ks))
            for folder in synth_dir.split(","):
                paths.extend(sorted((cache / folder).glob(f"{host}_*.npz")))
        for p in paths:
            c = np.load(p)
            self.cases.append((c["hu"], c["labels"], c["brain"], int(c["offset"]),
                               bool(c["at_start"]), bool(c["at_end"])))
        if not self.cases:
            raise SystemExit(f"no synthetic cases for hosts {hosts}: run 'synth' first")
        # indices of the cases holding each subtype: a pass over every label map, so only when balancing
        self.balance_subtypes = balance_subtypes
        self.cases_with = {t: [n for n, c in enumerate(self.cases) if (c[1] == t).any()]
                           for t in range(1, 6)} if balance_subtypes else {}
        self.hard: list[np.ndarray] = []  # per host: (k, v, u) of pixels an earlier model called blood
        self.hard_fraction = 0.0

    def add_negative_slices(self, cache: Path, data: Path, series: list[str], margin: int = 1) -> int:
        """Slices the experts labelled free of any hemorrhage, in series that do hold hemorrhage, as clean
        negatives (every pixel background): other patients' skull base and vertex than the normal hosts'.

        A slice is used only when no slice within ``margin`` of it (grid order) is labelled positive, so a
        label given one slice off cannot teach the network that blood is background.
        """
        labels = read_slice_labels(data)
        added = 0
        for name in series:
            d = np.load(cache / "net" / f"{name}.npz")
            nk = d["hu"].shape[0]
            positive = np.zeros(nk, bool)
            known = np.zeros(nk, bool)
            for k, y in labelled_slices(d, labels):
                known[k] = True
                positive[k] |= bool(y["any"])
            near_positive = np.convolve(positive, np.ones(2 * margin + 1), mode="same") > 0
            ks = np.flatnonzero(known & ~near_positive & head_slices(d["hu"]))
            if ks.size:
                self.clean.append((d["hu"], d["brain"], context_offset(self.spec_in, float(d["dz"])), ks))
                added += int(ks.size)
        return added

    def mine_hard_negatives(self, net: torch.nn.Module, threshold: float = 0.3, batch: int = 8) -> int:
        """Pixels of the clean host slices that ``net`` calls hemorrhage (lesion probability > threshold).

        Negative crops are then centred on them with probability ``hard_fraction``: the skull-base and
        vertex false positives are rare among random crops, so they are shown on purpose.
        """
        net.eval()
        self.hard = []
        with torch.inference_mode():
            for hu, brain, offset, allowed in tqdm(self.clean, desc="mine hard negatives"):
                ks = np.intersect1d(allowed, np.flatnonzero(brain.reshape(brain.shape[0], -1).any(axis=1)))
                found = []
                for n0 in range(0, ks.size, batch):
                    kk = ks[n0:n0 + batch]
                    x = torch.as_tensor(make_channels(hu.astype(np.float32), kk, offset, self.windows,
                                                      self.n_context))
                    lesion = 1.0 - torch.softmax(net(x), 1)[:, 0].numpy()
                    hit = (lesion > threshold) & brain[kk]
                    for n, k in enumerate(kk):
                        vv, uu = np.nonzero(hit[n])
                        found.append(np.stack([np.full(vv.size, k), vv, uu], 1))
                self.hard.append(np.concatenate(found) if found else np.zeros((0, 3), int))
        net.train()
        return int(sum(len(h) for h in self.hard))

    def _crop_at(self, arrays: list[np.ndarray], cj: int, ci: int) -> list[np.ndarray]:
        size = arrays[0].shape[-1]
        h = self.crop // 2
        j0 = int(np.clip(cj - h, 0, size - self.crop))
        i0 = int(np.clip(ci - h, 0, size - self.crop))
        return [a[..., j0:j0 + self.crop, i0:i0 + self.crop] for a in arrays]

    def sample(self, positive: bool) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        if positive:
            # balanced: pick a subtype first, then a case, slice and pixel holding it (rare subtypes such
            # as IVH casts are otherwise seen far less often than IPH)
            target = int(rng.integers(1, 6)) if self.balance_subtypes else 0
            pool = self.cases_with[target] if target and self.cases_with[target] else range(len(self.cases))
            hu, lab, brain, offset, _, _ = self.cases[pool[int(rng.integers(len(pool)))]]
            nk = hu.shape[0]
            has = (lab == target) if target and (lab == target).any() else (lab > 0)
            lesion_ks = np.flatnonzero(has.any(axis=(1, 2)))
            k = int(rng.choice(lesion_ks)) if rng.random() < 0.85 else int(rng.integers(nk))
            x = make_channels(hu.astype(np.float32), [k], offset, self.windows, self.n_context)[0]
            y = lab[k]
            pts = np.argwhere(has[k])
            if pts.size and rng.random() < 0.9:
                cj, ci = pts[int(rng.integers(len(pts)))] + rng.integers(-40, 41, 2)
            else:
                bj, bi = np.nonzero(brain[k]) if brain[k].any() else (np.array([128]), np.array([128]))
                n = int(rng.integers(len(bj)))
                cj, ci = bj[n], bi[n]
        elif self.hard_fraction and rng.random() < self.hard_fraction and any(len(h) for h in self.hard):
            with_hard = [n for n, h in enumerate(self.hard) if len(h)]
            host = with_hard[int(rng.integers(len(with_hard)))]
            hu, brain, offset, _ = self.clean[host]
            k, cj, ci = self.hard[host][int(rng.integers(len(self.hard[host])))]
            cj, ci = np.array([cj, ci]) + rng.integers(-30, 31, 2)
            x = make_channels(hu.astype(np.float32), [int(k)], offset, self.windows, self.n_context)[0]
            y = np.zeros(hu.shape[1:], np.uint8)
        else:
            # any slice of the head (also skull base and vertex, where false positives arise)
            hu, brain, offset, ks = self.clean[int(rng.integers(len(self.clean)))]
            k = int(rng.choice(ks))
            x = make_channels(hu.astype(np.float32), [k], offset, self.windows, self.n_context)[0]
            y = np.zeros(hu.shape[1:], np.uint8)
            bj, bi = np.nonzero(brain[k] if brain[k].sum() > 200 else hu[k] > -300)
            n = int(rng.integers(len(bj)))
            cj, ci = bj[n], bi[n]
        x, y = self._crop_at([x, y], int(cj), int(ci))
        if rng.random() < 0.5:
            x, y = x[..., ::-1], y[..., ::-1]
        # intensity jitter (in window units): gain and offset, as from scanner calibration differences
        x = x * rng.uniform(0.95, 1.05) + rng.normal(0, 0.02)
        return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y, dtype=np.int64)

    def batch(self, size: int, positive_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.sample(self.rng.random() < positive_fraction) for _ in range(size)]
        return (torch.as_tensor(np.stack([p[0] for p in pairs])),
                torch.as_tensor(np.stack([p[1] for p in pairs])))


def positive_series_for(spec: str, data: Path) -> list[str]:
    """Positive (hemorrhage) series whose slice labels a model may learn from: never those it is evaluated on.

    The evaluation scores positive series n with ``fold_scoring_positive(n)``; a fold model learns from the
    others, the shipped model (``all``) from every one.
    """
    positives = positive_series(data)
    if spec == "all":
        return positives
    if spec in ("fold0", "fold1"):
        return [s for n, s in enumerate(positives) if fold_scoring_positive(n) != spec]
    return []


class SliceLabelSampler:
    """Whole real slices with their expert slice-level labels (weak supervision, multiple-instance)."""

    def __init__(self, spec: dict, cache: Path, data: Path, series: list[str],
                 rng: np.random.Generator) -> None:
        self.windows = spec["input"]["windows"]
        self.n_context = int(spec["input"].get("context_slices", 1))
        self.rng = rng
        labels = read_slice_labels(data)
        self.volumes, self.positive, self.negative = [], [], []
        for name in series:
            d = np.load(cache / "net" / f"{name}.npz")
            v = len(self.volumes)
            self.volumes.append((d["hu"], d["brain"], context_offset(spec["input"], float(d["dz"]))))
            for k, y in labelled_slices(d, labels):
                if not d["brain"][k].any():
                    continue
                target = np.array([y[key] for key in DETECTION_KEYS], np.float32)  # any, then labels 1..5
                (self.positive if y["any"] else self.negative).append((v, k, target))

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, brain mask, targets [any, IPH, IVH, SAH, SDH, EDH]): half positive, half negative slices."""
        xs, masks, ts = [], [], []
        for n in range(size):
            pool = self.positive if (n % 2 == 0 and self.positive) else self.negative
            v, k, target = pool[int(self.rng.integers(len(pool)))]
            hu, brain, offset = self.volumes[v]
            x = make_channels(hu.astype(np.float32), [k], offset, self.windows, self.n_context)[0]
            m = brain[k]
            if self.rng.random() < 0.5:
                x, m = x[..., ::-1], m[..., ::-1]
            xs.append(np.ascontiguousarray(x))
            masks.append(np.ascontiguousarray(m))
            ts.append(target)
        return torch.as_tensor(np.stack(xs)), torch.as_tensor(np.stack(masks)), torch.as_tensor(np.stack(ts))


def mil_loss(logits: torch.Tensor, brain: torch.Tensor, targets: torch.Tensor,
             top_k: int = 12) -> torch.Tensor:
    """Multiple-instance loss: a slice's score per finding = mean of its top-k pixel probabilities inside
    the brain (the detection rule's pooling), against the slice label (binary cross-entropy)."""
    prob = torch.softmax(logits, 1)
    maps = torch.cat([1.0 - prob[:, :1], prob[:, 1:]], 1)  # any, IPH, IVH, SAH, SDH, EDH
    n = len(brain)
    scores = _top_mean(maps.reshape(n, maps.shape[1], -1), brain.reshape(n, -1), top_k).clamp(1e-4, 1 - 1e-4)
    weights = torch.tensor([2.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    bce = -(targets * torch.log(scores) + (1 - targets) * torch.log(1 - scores))
    return (bce * weights).sum(1).mean() / weights.sum()


def widen_inputs(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights of a network with fewer input channels, fitted to one with more (new windows appended last):
    the new input channels get zero weights, so the widened network starts out computing exactly what the
    old one did and training decides what the new channels are worth."""
    out = dict(state)
    for key, value in state.items():
        want = target.get(key)
        if (want is not None and value.ndim == want.ndim >= 2 and value.shape[0] == want.shape[0]
                and value.shape[2:] == want.shape[2:] and value.shape[1] < want.shape[1]):
            pad = torch.zeros((value.shape[0], want.shape[1] - value.shape[1], *value.shape[2:]),
                              dtype=value.dtype)
            out[key] = torch.cat([value, pad], 1)
            print(f"widened {key}: {tuple(value.shape)} -> {tuple(out[key].shape)} (new inputs start at 0)")
    return out


def parse_alternating(text: str | int) -> list[int]:
    """'128,256' -> [128, 256]: sizes used in turn, one per training step."""
    try:
        values = [int(v) for v in str(text).split(",")]
    except ValueError as exc:
        raise SystemExit(f"expected integers separated by commas, got {text!r}") from exc
    if not values or min(values) < 1:
        raise SystemExit(f"expected positive integers, got {text!r}")
    return values


def cmd_train(args: argparse.Namespace) -> None:
    from monai.losses import DiceCELoss

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    spec = load_spec(args.spec)
    rng = np.random.default_rng(args.seed)
    hosts = hosts_for(args.hosts, args.data)
    crops, batches = parse_alternating(args.crop), parse_alternating(args.batch)
    if len(batches) not in (1, len(crops)):
        raise SystemExit(f"--batch {args.batch}: give one size or one per crop ({len(crops)})")
    sampler = Sampler(spec, args.cache, hosts, rng, crops[0], args.synth_dir, args.balance_subtypes)
    print(f"hosts {len(hosts)}: {', '.join(h[:11] for h in hosts)}; synthetic cases {len(sampler.cases)}")
    net = build_network(spec["architecture"])
    if args.init:
        net.load_state_dict(widen_inputs(torch.load(args.init, map_location="cpu", weights_only=True),
                                         net.state_dict()))
        print(f"fine-tuning from {args.init}")
    negative_series = positive_series_for(args.hosts, args.data) if args.negative_slices else []
    if args.negative_slices and not negative_series:
        print(f"--negative-slices: no positive series may be learned with --hosts {args.hosts} (only with "
              "all, fold0 or fold1): none added")
    if negative_series:
        n_neg = sampler.add_negative_slices(args.cache, args.data, negative_series)
        print(f"negative slices: {n_neg} hemorrhage-free slices of {len(negative_series)} positive series "
              f"({', '.join(s[:11] for s in negative_series)}) added to the clean negatives")
    if args.hard_fraction:
        n_hard = sampler.mine_hard_negatives(net)
        sampler.hard_fraction = args.hard_fraction
        print(f"hard negatives: {n_hard} pixels on the clean host slices; {args.hard_fraction:.0%} of "
              "negative crops centred on them")
    weak, weak_series = None, []
    if args.weak_slices:
        weak_series = positive_series_for(args.hosts, args.data)
        weak = SliceLabelSampler(spec, args.cache, args.data, weak_series, rng)
        print(f"weak supervision: slice labels of {len(weak_series)} positive series "
              f"({', '.join(s[:11] for s in weak_series)}): {len(weak.positive)} positive and "
              f"{len(weak.negative)} negative slices, {args.weak_slices} per step")
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True,
                         lambda_dice=1.0, lambda_ce=1.0)
    net.train()
    t0 = time.time()
    bar = tqdm(range(args.steps), desc="train", mininterval=5)
    running = None
    for step in bar:
        sampler.crop = crops[step % len(crops)]  # several crop sizes: alternate step by step
        x, y = sampler.batch(batches[step % len(batches)], args.positive_fraction)
        loss = loss_fn(net(x), y[:, None])
        if weak is not None:
            wx, wmask, wt = weak.batch(args.weak_slices)
            loss = loss + args.weak_weight * mil_loss(net(wx), wmask, wt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        value = loss.item()
        running = value if running is None else 0.98 * running + 0.02 * value
        if step % 50 == 0:
            bar.set_postfix(loss=f"{running:.3f}")
        if args.checkpoint_every and step and step % args.checkpoint_every == 0:
            torch.save(net.state_dict(), args.out)
    torch.save(net.state_dict(), args.out)
    meta = {"hosts": hosts, "synth_dir": args.synth_dir, "init": str(args.init) if args.init else None,
            "hard_fraction": args.hard_fraction, "balance_subtypes": args.balance_subtypes,
            "weak_slices": args.weak_slices, "weak_weight": args.weak_weight,
            "weak_series": weak_series, "negative_slices_of": negative_series,
            "positive_fraction": args.positive_fraction,
            "steps": args.steps, "batch": batches if len(batches) > 1 else batches[0],
            "crop": crops if len(crops) > 1 else crops[0], "lr": args.lr,
            "seed": args.seed, "synthetic_cases": len(sampler.cases), "final_loss": running,
            "train_seconds": round(time.time() - t0, 1)}
    Path(str(args.out) + ".json").write_text(json.dumps(meta, indent=1))
    print(json.dumps(meta))


def cmd_register(args: argparse.Namespace) -> None:
    """Copy weights into the package's models/ folder and write their Models.json entry (first = default)."""
    from ICHAnalyzerLib.constants import SUBTYPES
    from ICHAnalyzerLib.inference import MODELS_JSON, sha256_file

    spec = load_spec(args.spec)
    target = MODELS_JSON.parent / f"{args.name}-{args.version}.pt"
    # re-save as a plain state dict of float32 tensors (what torch.load(weights_only=True) reads)
    state = torch.load(args.weights, map_location="cpu", weights_only=True)
    if Path(args.weights).resolve() != target.resolve():
        torch.save({k: v.float().contiguous() for k, v in state.items()}, target)
    meta_path = Path(str(args.weights) + ".json")
    training = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    entry = {
        "name": args.name,
        "version": args.version,
        "file": target.name,
        "sha256": sha256_file(target),
        "description": args.description,
        "labels": {str(s.label): s.key for s in SUBTYPES},
        "input": spec["input"],
        "architecture": spec["architecture"],
        "detection": spec["detection"],
        "training": training,
    }
    registry = json.loads(MODELS_JSON.read_text()) if MODELS_JSON.exists() else {"models": []}
    others = [m for m in registry["models"] if m["name"] != args.name]
    registry["models"] = [entry, *others]
    MODELS_JSON.write_text(json.dumps(registry, indent=2) + "\n")
    print(f"registered {args.name} {args.version}: {target} ({target.stat().st_size / 1e6:.1f} MB)")


def main() -> None:
    warnings.filterwarnings("ignore", module="pydicom")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["prepare", "synth", "train", "register"])
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="model spec (input + architecture)")
    p.add_argument("--native-cache", type=Path, default=None, help="pre-read volumes (hu, affine, mask) npz")
    p.add_argument("--shapes", type=Path,
                   default=SHARED / "data/lesion-shapes/blast-ct_scan_0_segmentation.nii.gz")
    p.add_argument("--hosts", default="all", help="fold0 | fold1 | all | comma-separated series")
    p.add_argument("--cases", type=int, default=40, help="synthetic cases per host")
    p.add_argument("--synth-dir", default="synth",
                   help="folder(s) of the synthetic cases inside the cache, comma-separated")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", default="16", help="batch size, or one per crop size (e.g. 16,8)")
    p.add_argument("--crop", default="160",
                   help="crop size in pixels, or several alternating step by step (e.g. 128,256)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--positive-fraction", type=float, default=0.7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--init", type=Path, default=None, help="train: start from these weights (fine-tune)")
    p.add_argument("--weak-slices", type=int, default=0,
                   help="train: whole real slices per step with multiple-instance loss on their slice labels "
                        "(positive series the model is never evaluated on; see positive_series_for)")
    p.add_argument("--weak-weight", type=float, default=1.0,
                   help="train: weight of the multiple-instance loss")
    p.add_argument("--negative-slices", action="store_true",
                   help="train: hemorrhage-free slices (expert labels) of the positive series the model is "
                        "never evaluated on serve as clean negatives too (see positive_series_for)")
    p.add_argument("--balance-subtypes", action="store_true",
                   help="train: positive crops pick a subtype uniformly first, then a case holding it")
    p.add_argument("--hard-fraction", type=float, default=0.0,
                   help="train: share of negative crops centred on pixels the starting model calls blood")
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--out", type=Path, default=DEFAULT_CACHE / "model.pt")
    p.add_argument("--weights", type=Path, help="register: trained weights (.pt)")
    p.add_argument("--name", default="ich-unet2d", help="register: model name")
    p.add_argument("--version", default="1", help="register: model version")
    p.add_argument("--description",
                   default="2.5D MONAI UNet trained on synthetic hemorrhage in real normal CT")
    args = p.parse_args()
    commands = {"prepare": cmd_prepare, "synth": cmd_synth, "train": cmd_train, "register": cmd_register}
    commands[args.command](args)


if __name__ == "__main__":
    main()
