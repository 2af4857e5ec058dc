#!/usr/bin/env python
"""JMMDA-GAN vs pix2pix (same depth and width, and matched for FLOPs) vs ablations vs trivial baselines.

    python benchmarks/compare_models.py --steps 150 --seeds 0,1,2 --out runs/bench      (./run.sh bench ...)

What it runs, exactly:
* training data: ``--train-cases`` phantoms generated with seeds 1000.. (never the test seeds); test data:
  ``--test-data`` (default: the committed sample cases, phantom seeds 0..7), i.e. held out;
* every network arm is trained from scratch for exactly ``--steps`` optimiser steps of ``--batch-size``
  slices with each seed of ``--seeds`` (same slices, sampling, learning rate for every arm; the printed step
  count is the one the trainer reports); wall time and forward GFLOPs per slice are recorded per arm;
* baselines: ``constant`` (the mean in-brain normalised DWI of the training cases, everywhere in the brain) and
  ``lut`` (per-pixel lookup table fitted on the training cases: Gaussian-smoothed CT HU x distance to the brain
  edge -> mean normalised DWI);
* metrics on every test case (jmmda_model.metrics): headline in-brain PSNR, 2-D and 3-D SSIM, superpixel r,
  lesion MAE (unclipped), per-lesion synthetic/real lesion-to-normal ratios with sensitivity stratified by CT
  contrast and volume, lesions rendered darker than normal, false-bright volume; whole-volume PSNR/SSIM as
  secondary columns;
* statistics: mean +- sd over seeds of the per-seed test means; paired differences (arm - pix2pix) with 95 % t
  confidence intervals over cases (each case averaged over seeds) and over seeds (each seed's mean difference; the
  verdict comes from these when there are two or more seeds); a CI that contains 0 is reported as a tie;
* inference time and peak memory of JMMDA relative to pix2pix at the same depth and width (and the
  FLOPs-matched pix2pix), each model in a fresh process, in the same run;
* every target of the model issue is checked and printed as MET or MISSED with the numbers.

Output: ``<out>/results.json``, ``<out>/results.md`` and ``<out>/lesion_sensitivity.png`` (fraction of lesions
shown vs CT contrast, per arm).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NETWORK_ARMS = {
    "jmmda": {},
    "pix2pix": {"arch": "pix2pix"},  # same depth and base width as jmmda
    "pix2pix_flops": {"arch": "pix2pix", "match_flops": True},  # width chosen so its FLOPs match jmmda's
    "jmmda_no_mask": {"use_mask": False},
    "jmmda_no_dwt": {"use_dwt": False},
    "jmmda_no_adaptive_fusion": {"use_adaptive_fusion": False},
    "jmmda_2d": {"pre": {"context_slices": 0}},  # single-slice input (no 2.5-D)
    "jmmda_no_lesion_aware": {"train": {"lesion_oversample": 1, "lambda_contrast": 0.0}},
    "jmmda_no_contrast_loss": {"train": {"lambda_contrast": 0.0}},
    "jmmda_aux_lesion": {"aux_lesion": True},
}
BASELINE_ARMS = ("constant", "lut")
DEFAULT_ARMS = "jmmda,pix2pix,pix2pix_flops,constant,lut"
HEADLINE = ["psnr_brain", "ssim_brain", "ssim3d_brain", "superpixel_r", "lesion_mae", "false_bright_ml"]
SECONDARY = ["psnr", "ssim"]
CONTRAST_EDGES = [0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 100.0]


# ---------------------------------------------------------------------------------------------- helpers
def gflops_per_slice(gcfg: dict, h: int, w: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from jmmda_model.networks import build_generator

    net = build_generator(gcfg).eval()
    x = torch.rand(1, gcfg["ct_channels"] + 1, h, w)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(x)
    return fc.get_total_flops() / 1e9


def arm_config(name: str, base: int, depth: int, in_ch: int, h: int, w: int) -> tuple[dict, dict, dict]:
    """(generator config, preprocess overrides, train overrides) of a network arm."""
    from jmmda_model.networks import GeneratorConfig
    from jmmda_model.preprocess import PreprocessConfig

    spec = dict(NETWORK_ARMS[name])
    pre = spec.pop("pre", {})
    train = spec.pop("train", {})
    match = spec.pop("match_flops", False)
    ch = PreprocessConfig(**pre).input_channels if pre else in_ch
    g = GeneratorConfig(base_channels=base, depth=depth, ct_channels=ch, **spec).to_dict()
    if match:  # FLOPs grow with the width: walk up to the first width past the target, keep the closer one
        target = gflops_per_slice(GeneratorConfig(base_channels=base, depth=depth, ct_channels=ch).to_dict(), h, w)
        best, best_err = base, float("inf")
        for b in range(base, 8 * base + 1, 2):
            f = gflops_per_slice({**g, "base_channels": b}, h, w)
            if abs(f - target) < best_err:
                best, best_err = b, abs(f - target)
            if f > target:
                break
        g["base_channels"] = best
    return g, pre, train


def t_ci(diffs: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    from scipy import stats

    d = np.asarray(diffs, float)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return float("nan"), float("nan"), float("nan")
    m = float(d.mean())
    half = float(stats.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    return m, m - half, m + half


def machine() -> dict:
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": dev,
            "torch": torch.__version__, "python": platform.python_version()}


# ---------------------------------------------------------------------------------------------- baselines
class LookupTable:
    """Mean normalised DWI per (smoothed CT HU bin, distance-to-brain-edge bin), fitted on training cases."""

    HU_EDGES = np.arange(-20.0, 82.0, 2.0)
    DIST_EDGES = np.array([0, 1, 2, 3, 4, 6, 8, 10, 13, 16, 20, 25, 30, 40, 60, 1e9], float)

    def __init__(self):
        self.sum = np.zeros((len(self.HU_EDGES) + 1, len(self.DIST_EDGES) + 1))
        self.n = np.zeros_like(self.sum)

    def _bins(self, lc):
        from scipy import ndimage as ndi

        sp = lc.spacing_zyx
        hu = ndi.gaussian_filter(lc.ct_hu, (0.0, 1.0, 1.0))
        dist = ndi.distance_transform_edt(lc.brain > 0, sampling=sp)
        return np.digitize(hu, self.HU_EDGES), np.digitize(dist, self.DIST_EDGES)

    def fit(self, cases):
        for lc in cases:
            hb, db = self._bins(lc)
            sel = lc.brain > 0
            np.add.at(self.sum, (hb[sel], db[sel]), lc.dwi[sel])
            np.add.at(self.n, (hb[sel], db[sel]), 1)
        glob = self.sum.sum() / max(self.n.sum(), 1)
        hu_marg = self.sum.sum(1) / np.maximum(self.n.sum(1), 1)
        self.table = np.where(self.n > 0, self.sum / np.maximum(self.n, 1),
                              np.where(self.n.sum(1, keepdims=True) > 0, hu_marg[:, None], glob))
        return self

    def predict(self, lc):
        hb, db = self._bins(lc)
        return (self.table[hb, db] * (lc.brain > 0)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- evaluation
def evaluate_predictions(predict, test_loaded) -> dict:
    """predict(lc) -> (z,y,x) array. Returns per-case metrics and per-lesion records."""
    from jmmda_model.metrics import evaluate_volume

    cases, lesions = {}, []
    for lc in test_loaded:
        y = predict(lc)
        m = evaluate_volume(y, lc.dwi, lc.brain, lc.lesion, lc.spacing_zyx, ct_hu=lc.ct_hu, target_unclipped=lc.dwi_unclipped)
        lesions += [{"case": lc.id, **x} for x in m.pop("lesion_detail")]
        cases[lc.id] = {k: float(v) for k, v in m.items()}
    return {"cases": cases, "lesions": lesions}


def train_network(name, gcfg, pre_over, train_over, seed, train_cases, args, out, loaded: dict):
    from jmmda_model.preprocess import PreprocessConfig
    from jmmda_model.trainer import TrainConfig, Trainer

    pre = {**PreprocessConfig().to_dict(), **pre_over}
    cfg = TrainConfig(generator=gcfg, preprocess=pre, epochs=10**6, max_steps=args.steps, batch_size=args.batch_size,
                      lr_g=args.lr, lr_d=args.lr, seed=seed, progress=False, tensorboard=False, **train_over)
    t = time.time()
    trainer = Trainer(cfg, out / f"{name}_s{seed}")
    summary = trainer.fit_loaded(load_cases_once(train_cases, trainer.pre, loaded), [], resume=False)
    return out / f"{name}_s{seed}" / "model.pt", summary["global_step"], time.time() - t


def load_cases_once(cases, pre, loaded: dict) -> list:
    """The cases as ``pre`` loads them, each (case, preprocessing) loaded once per benchmark run: every arm and seed
    with the same preprocessing trains on or scores the same arrays (the mid-sagittal plane is not estimated again;
    training and scoring only read them)."""
    from jmmda_model.data import load_case

    key = json.dumps(pre.to_dict(), sort_keys=True, default=str)
    for c in cases:
        if (c.id, str(c.ct), key) not in loaded:
            loaded[(c.id, str(c.ct), key)] = load_case(c, pre)
    return [loaded[(c.id, str(c.ct), key)] for c in cases]


def run_arm(name, seeds, train_cases, train_loaded, test_cases, args, out, dims, pre, loaded: dict):
    from jmmda_model.inference import Synthesizer
    from jmmda_model.report import predict_case

    runs = []
    if name in BASELINE_ARMS:
        if name == "constant":
            mean = float(np.mean(np.concatenate([lc.dwi[lc.brain > 0] for lc in train_loaded])))
            pred = lambda lc: (np.full(lc.dwi.shape, mean, np.float32) * (lc.brain > 0))  # noqa: E731
        else:
            lut = LookupTable().fit(train_loaded)
            pred = lut.predict
        res = evaluate_predictions(pred, load_cases_once(test_cases, pre, loaded))
        return {"kind": "baseline", "runs": [{"seed": None, "steps": 0, "train_seconds": 0.0, **res}]}
    gcfg, pre_over, train_over = arm_config(name, args.base_channels, args.depth, dims["in_ch"], dims["h"], dims["w"])
    flops = gflops_per_slice(gcfg, dims["h"], dims["w"])
    for seed in seeds:
        print(f"== {name} seed {seed}: training {args.steps} steps ...", flush=True)
        model, steps, secs = train_network(name, gcfg, pre_over, train_over, seed, train_cases, args, out, loaded)
        syn = Synthesizer(model, device=args.device)
        res = evaluate_predictions(lambda lc: predict_case(syn, lc), load_cases_once(test_cases, syn.pre, loaded))  # noqa: B023
        runs.append({"seed": seed, "steps": steps, "train_seconds": round(secs, 1), **res})
        print(f"   {steps} steps in {secs:.0f} s; in-brain PSNR "
              f"{np.mean([c['psnr_brain'] for c in res['cases'].values()]):.2f} dB", flush=True)
    return {"kind": "network", "generator": gcfg, "preprocess_overrides": pre_over, "train_overrides": train_over,
            "gflops_per_slice": round(flops, 3), "runs": runs}


def summarise(arm: dict) -> dict:
    from jmmda_model.metrics import stratified_sensitivity

    keys = HEADLINE + SECONDARY + ["lesions_shown", "lesions_total", "lesions_darker", "lesion_voxels_clipped"]
    def case_mean(r, k):
        vals = np.array([c[k] for c in r["cases"].values()], float)
        return float(vals[np.isfinite(vals)].mean()) if np.isfinite(vals).any() else float("nan")

    per_seed = {k: [case_mean(r, k) for r in arm["runs"]] for k in keys}
    out = {k: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0} for k, v in per_seed.items()}
    lesions = [x for r in arm["runs"] for x in r["lesions"]]
    out["sensitivity"] = stratified_sensitivity(lesions)
    out["darker_total"] = sum(x["darker"] for x in lesions)
    return out


def per_case_mean(arm: dict, key: str) -> dict:
    cases = arm["runs"][0]["cases"].keys()
    return {c: float(np.mean([r["cases"][c][key] for r in arm["runs"]])) for c in cases}


def paired(arm: dict, ref: dict, key: str) -> dict:
    """Arm - reference: the t interval over cases (each case averaged over seeds) and, with two or more seeds, over
    seeds (each seed's mean difference over the cases, the i-th run of one arm against the i-th of the other). Every
    case of one seed's network shares that training's draw, so the interval over cases speaks of these runs; the
    verdict (the recipe's) comes from the interval over seeds when there are two or more, else from the cases."""
    a, b = per_case_mean(arm, key), per_case_mean(ref, key)
    d = np.array([a[c] - b[c] for c in a])
    m, lo, hi = t_ci(d)
    judge = lambda lo_, hi_: ("tie" if not (lo_ > 0 or hi_ < 0)
                              else ("better" if (lo_ > 0) == (key != "lesion_mae") else "worse"))
    out = {"mean_diff": m, "ci95": [lo, hi], "n_cases": int(np.isfinite(d).sum()), "verdict_cases": judge(lo, hi)}
    n = min(len(arm["runs"]), len(ref["runs"]))
    per_seed = [float(np.nanmean([ra["cases"][c][key] - rb["cases"][c][key] for c in ra["cases"] if c in rb["cases"]]))
                for ra, rb in zip(arm["runs"][:n], ref["runs"][:n])]
    if n >= 2:
        _, slo, shi = t_ci(np.array(per_seed))
        out.update(ci95_seeds=[slo, shi], n_seeds=n, verdict=judge(slo, shi))
    else:
        out.update(ci95_seeds=None, n_seeds=n, verdict=out["verdict_cases"])
    return out


def sensitivity_curve(arms: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centres = [(a + min(b, 10.0)) / 2 for a, b in zip(CONTRAST_EDGES[:-1], CONTRAST_EDGES[1:])]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, arm in arms.items():
        lesions = [x for r in arm["runs"] for x in r["lesions"]]
        ys, ns = [], []
        for lo, hi in zip(CONTRAST_EDGES[:-1], CONTRAST_EDGES[1:]):
            sel = [x for x in lesions if lo <= x.get("ct_contrast_hu", np.nan) < hi]
            ys.append(np.mean([x["shown"] for x in sel]) if sel else np.nan)
            ns.append(len(sel))
        ax.plot(centres, ys, marker="o", label=name)
    ax.set_xlabel("CT lesion contrast (HU, ring of normal brain minus lesion)")
    ax.set_ylabel("fraction of lesions shown (synthetic ratio >= 1.3)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Lesion sensitivity on held-out phantoms (all seeds pooled)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- inference cost
INFER_CHILD = r"""
import json, sys, threading, time, psutil, torch, numpy as np
sys.path.insert(0, sys.argv[1])
from jmmda_model.networks import build_generator
from jmmda_model.inference import predict_slices
torch.manual_seed(0)
cfg = json.loads(sys.argv[2]); n = int(sys.argv[3]); h, w = int(sys.argv[4]), int(sys.argv[5]); bs = int(sys.argv[6])
net = build_generator(cfg).eval()
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu"); net.to(dev)
x = np.random.rand(n, cfg["ct_channels"] + 1, h, w).astype(np.float32)
proc = psutil.Process()
base = proc.memory_info().rss
peak = [base]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss); time.sleep(0.001)
sampler = threading.Thread(target=sample); sampler.start()
predict_slices(net, x[:2], dev)  # warm-up
if dev.type == "cuda": torch.cuda.reset_peak_memory_stats(); torch.cuda.synchronize()
times = []
for _ in range(5):
    t = time.perf_counter(); predict_slices(net, x, dev, batch_size=bs)
    if dev.type == "cuda": torch.cuda.synchronize()
    times.append(time.perf_counter() - t)
stop.set(); sampler.join()
used = torch.cuda.max_memory_allocated() if dev.type == "cuda" else peak[0] - base
print(json.dumps({"seconds": float(np.median(times)), "peak_bytes": int(used), "device": dev.type,
                  "threads": torch.get_num_threads(), "params": sum(p.numel() for p in net.parameters())}))
"""


def inference_cost(cfg: dict, slices: int, h: int, w: int, batch: int) -> dict:
    r = subprocess.run([sys.executable, "-c", INFER_CHILD, str(ROOT), json.dumps(cfg), str(slices), str(h), str(w), str(batch)],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- report
def fmt(s, digits=3):
    return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}" if np.isfinite(s["mean"]) else "n/a"


def report(results: dict) -> str:
    arms, a = results["arms"], results["config"]
    lines = [
        f"Command: `{results['command']}`",
        "",
        f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, torch {results['machine']['torch']} "
        f"({results['machine']['torch_threads']} threads), GPU: {results['machine']['gpu']}. Wall time {results['wall_minutes']:.1f} min.",
        "",
        f"Training: {a['train_cases']} generated phantoms (seeds 1000–{1000 + a['train_cases'] - 1}); every network arm "
        f"trained from scratch for exactly {a['steps']} optimiser steps of batch {a['batch_size']} (lr {a['lr']}) with seeds "
        f"{a['seeds']}; test: {results['n_test']} held-out cases from `{a['test_data']}`. Headline metrics inside the brain; "
        "mean ± sd over seeds of the per-seed test means (baselines: deterministic, sd 0).",
        "",
        "| arm | steps | train s / seed | GFLOP/slice | PSNR brain | SSIM brain (2-D) | SSIM brain (3-D) | superpixel r | lesion MAE | "
        "false-bright mL | lesions shown | darker | PSNR whole | SSIM whole |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, arm in arms.items():
        s = arm["summary"]
        steps = ",".join(sorted({str(r["steps"]) for r in arm["runs"]}))
        secs = np.mean([r["train_seconds"] for r in arm["runs"]])
        sens = s["sensitivity"]["all"]
        lines.append(
            f"| {name} | {steps} | {secs:.0f} | {arm.get('gflops_per_slice', 0) or '–'} | {fmt(s['psnr_brain'], 2)} | {fmt(s['ssim_brain'])} | "
            f"{fmt(s['ssim3d_brain'])} | {fmt(s['superpixel_r'])} | {fmt(s['lesion_mae'])} | {fmt(s['false_bright_ml'], 1)} | "
            f"{sens['shown']}/{sens['n']} | {s['darker_total']} | {fmt(s['psnr'], 2)} | {fmt(s['ssim'])} |"
        )
    lines += ["", "Lesion sensitivity (synthetic lesion/normal ratio >= 1.3), all seeds pooled:", "",
              "| arm | " + " | ".join(next(iter(arms.values()))["summary"]["sensitivity"]) + " |",
              "|---|" + "---|" * len(next(iter(arms.values()))["summary"]["sensitivity"])]
    for name, arm in arms.items():
        sens = arm["summary"]["sensitivity"]
        lines.append(f"| {name} | " + " | ".join(
            f"{v['shown']}/{v['n']}" + (f" ({v['sensitivity']:.0%})" if v["n"] else "") for v in sens.values()) + " |")
    if results.get("paired"):
        lines += ["", "Paired differences against pix2pix (same depth and width), 95 % t confidence intervals over cases "
                  "(each case averaged over seeds: these runs) and over seeds (each seed's mean difference: the recipe); "
                  "the verdict comes from the seeds when there are two or more; a CI containing 0 is a tie:", "",
                  "| arm − pix2pix | metric | mean diff | 95 % CI, cases | n | 95 % CI, seeds | n | verdict |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, per in results["paired"].items():
            for key, p in per.items():
                cs = p.get("ci95_seeds")
                lines.append(f"| {name} | {key} | {p['mean_diff']:+.3f} | [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}] | "
                             f"{p['n_cases']} | " + (f"[{cs[0]:+.3f}, {cs[1]:+.3f}]" if cs else "-")
                             + f" | {p.get('n_seeds', '-')} | {p['verdict']} |")
    inf = results.get("inference")
    if inf:
        lines += ["", f"Inference on one {inf['slices']}-slice {inf['h']} × {inf['w']} volume (batch {inf['batch']}, fresh process "
                  f"per model, {inf['jmmda']['device']}, {inf['jmmda']['threads']} threads, median of 5):", "",
                  "| model | time s | peak memory MiB | parameters |", "|---|---|---|---|"]
        for k in ("jmmda", "pix2pix", "pix2pix_flops"):
            if k in inf:
                lines.append(f"| {k} | {inf[k]['seconds']:.3f} | {inf[k]['peak_bytes'] / 2**20:.1f} | {inf[k]['params']:,} |")
        lines += ["", f"Ratios JMMDA / pix2pix (same depth and width): time {inf['time_ratio']:.2f}, memory {inf['memory_ratio']:.2f}."]
    lines += ["", "Targets (model issue):", ""]
    lines += [f"- **{t['status']}** — {t['target']}: {t['value']}" for t in results["targets"]]
    return "\n".join(lines) + "\n"


def check_targets(results: dict) -> list[dict]:
    arms, out = results["arms"], []
    jm = arms.get("jmmda")
    if jm:
        t = jm["summary"]["sensitivity"]["target: >=3 HU and >=1 mL"]
        ok = t["n"] > 0 and t["sensitivity"] >= 0.85
        out.append({"target": "lesions >= 3 HU and >= 1 mL shown >= 85 %", "status": "MET" if ok else "MISSED",
                    "value": f"{t['shown']}/{t['n']} = {t['sensitivity']:.0%}" if t["n"] else "no such lesions"})
        d = jm["summary"]["darker_total"]
        out.append({"target": "no lesion rendered darker than normal brain", "status": "MET" if d == 0 else "MISSED",
                    "value": f"{d} darker (all seeds)"})
        if "jmmda" in results.get("paired", {}):
            p = results["paired"]["jmmda"]["psnr_brain"]
            ci = p.get("ci95_seeds") or p["ci95"]  # the recipe's interval (over seeds) when there are seeds to pair
            out.append({"target": "JMMDA − pix2pix in-brain PSNR, 95 % CI above 0", "status": "MET" if ci[0] > 0 else "MISSED",
                        "value": f"{p['mean_diff']:+.2f} dB [{ci[0]:+.2f}, {ci[1]:+.2f}] over "
                                 + (f"{p['n_seeds']} seeds" if p.get("ci95_seeds") else f"{p['n_cases']} cases")
                                 + f" ({p['verdict']})"})
            from scipy.stats import fisher_exact

            a, b = jm["summary"]["sensitivity"]["all"], arms["pix2pix"]["summary"]["sensitivity"]["all"]
            p = fisher_exact([[a["shown"], a["n"] - a["shown"]], [b["shown"], b["n"] - b["shown"]]], alternative="greater")[1]
            higher = a["shown"] / max(a["n"], 1) > b["shown"] / max(b["n"], 1)
            status = "MET" if higher and p < 0.05 else ("TIE (not met)" if p >= 0.05 else "MISSED")
            out.append({"target": "JMMDA lesion sensitivity higher than pix2pix (one-sided Fisher exact, all seeds pooled)",
                        "status": status, "value": f"{a['shown']}/{a['n']} vs {b['shown']}/{b['n']}, p = {p:.2f}"})
        if "lut" in arms:
            gain = jm["summary"]["psnr_brain"]["mean"] - arms["lut"]["summary"]["psnr_brain"]["mean"]
            out.append({"target": ">= 3 dB in-brain PSNR over the lookup table", "status": "MET" if gain >= 3 else "MISSED",
                        "value": f"{gain:+.2f} dB"})
    inf = results.get("inference")
    if inf:
        out.append({"target": "JMMDA forward time <= 2x pix2pix (same depth and width)", "status": "MET" if inf["time_ratio"] <= 2 else "MISSED",
                    "value": f"{inf['time_ratio']:.2f}x"})
    return out


# ---------------------------------------------------------------------------------------------- main
def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--curves"]:  # the learning-curve benchmark of the lesion recipe (learning_curves.py)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import learning_curves

        return learning_curves.main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__ + "\n--curves (first): the learning-curve benchmark of the lesion "
                                 "recipe instead (benchmarks/learning_curves.py; --curves --help lists its options)", formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", default=DEFAULT_ARMS, help=f"comma-separated; known: {', '.join([*NETWORK_ARMS, *BASELINE_ARMS])}")
    ap.add_argument("--steps", type=int, default=150, help="optimiser steps per network arm and seed (exact)")
    ap.add_argument("--seeds", default="0,1,2", help="training seeds (>= 3 for confidence intervals)")
    ap.add_argument("--train-cases", type=int, default=12)
    ap.add_argument("--test-data", default=str(ROOT / "sample_data" / "studies"), help="folder of held-out cases")
    ap.add_argument("--test-ids", default="", help="comma-separated case ids (default: all)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--base-channels", type=int, default=16)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench"))
    ap.add_argument("--no-inference", action="store_true", help="skip the inference time/memory comparison")
    ap.add_argument("--infer-only", action="store_true", help="only the inference time/memory comparison")
    ap.add_argument("--from-json", default=None, help="rewrite results.md (report and targets) from a results.json")
    args = ap.parse_args(argv)
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
        results["targets"] = check_targets(results)
        md = report(results)
        Path(args.from_json).with_name("results.md").write_text("# Benchmark results\n\n" + md)
        Path(args.from_json).write_text(json.dumps(results, indent=1, default=float))
        print(md)
        return results

    from jmmda_model.data import find_cases
    from jmmda_model.phantom import write_datastore
    from jmmda_model.preprocess import PreprocessConfig

    t0 = time.time()
    names = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in names if a not in NETWORK_ARMS and a not in BASELINE_ARMS]
    if unknown:
        ap.error(f"unknown arm(s) {unknown}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pre = PreprocessConfig()
    test_cases = find_cases(args.test_data)
    if args.test_ids:
        want = set(args.test_ids.split(","))
        test_cases = [c for c in test_cases if c.id in want]
    if not test_cases and not args.infer_only:
        ap.error(f"no complete test cases in {args.test_data}")
    loaded: dict = {}  # (case, preprocessing) -> loaded case, for every arm and seed of this run
    probe = load_cases_once(test_cases[:1], pre, loaded)[0]
    dims = {"in_ch": pre.input_channels, "h": int(math.ceil(probe.ct_hu.shape[1] / 8) * 8),
            "w": int(math.ceil(probe.ct_hu.shape[2] / 8) * 8), "slices": probe.ct_hu.shape[0]}
    results = {"command": " ".join(["python benchmarks/compare_models.py", *(argv if argv is not None else sys.argv[1:])]),
               "config": {**vars(args), "seeds": seeds}, "machine": machine(), "n_test": len(test_cases), "arms": {}}

    if not args.infer_only:
        with tempfile.TemporaryDirectory(prefix="jmmda_bench_") as tmp:
            train_dir = Path(tmp)
            print(f"generating {args.train_cases} training phantoms in {train_dir} ...", flush=True)
            write_datastore(train_dir, args.train_cases, first_seed=1000)
            train_cases = find_cases(train_dir)
            train_loaded = load_cases_once(train_cases, pre, loaded)
            for name in names:
                arm = run_arm(name, seeds, train_cases, train_loaded, test_cases, args, out, dims, pre, loaded)
                arm["summary"] = summarise(arm)
                results["arms"][name] = arm
        if "pix2pix" in results["arms"]:
            ref = results["arms"]["pix2pix"]
            results["paired"] = {n: {k: paired(a, ref, k) for k in ("psnr_brain", "ssim_brain", "ssim3d_brain", "lesion_mae")}
                                 for n, a in results["arms"].items() if n != "pix2pix"}
        sensitivity_curve(results["arms"], out / "lesion_sensitivity.png")

    if not args.no_inference:
        h, w, n, bs = dims["h"], dims["w"], dims["slices"], 8
        inf = {"slices": n, "h": h, "w": w, "batch": bs}
        for k in ("jmmda", "pix2pix", "pix2pix_flops"):
            g, _, _ = arm_config(k, args.base_channels, args.depth, dims["in_ch"], h, w)
            inf[k] = inference_cost(g, n, h, w, bs)
        inf["time_ratio"] = inf["jmmda"]["seconds"] / inf["pix2pix"]["seconds"]
        inf["memory_ratio"] = inf["jmmda"]["peak_bytes"] / max(inf["pix2pix"]["peak_bytes"], 1)
        results["inference"] = inf
    results["wall_minutes"] = (time.time() - t0) / 60
    results["targets"] = check_targets(results)
    md = report(results)
    print("\n" + md)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    (out / "results.md").write_text("# Benchmark results\n\n" + md)
    return results


if __name__ == "__main__":
    r = main()
    sys.exit(r if isinstance(r, int) else 0)
