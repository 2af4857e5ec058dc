#!/usr/bin/env python
"""JMMDA-GAN vs pix2pix vs ablations, same training budget, held-out phantom cases; then inference
time and peak memory of JMMDA relative to pix2pix - all in one run.

    python benchmarks/compare_models.py --train-cases 16 --steps 300 --out runs/bench

Training data: phantoms generated with seeds 1000.. (never the committed sample cases); test data:
the committed sample cases (sample_data/studies, seeds 0..9), i.e. held out. Every arm gets the same
seed, the same slices, the same number of optimiser steps and batch size. Output: a Markdown table
(mean +- sd over test cases) and ratios, also written to <out>/results.json and <out>/results.md.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ARMS = {
    "jmmda": {},
    "pix2pix": {"arch": "pix2pix", "depth": 4},
    "jmmda_no_mask": {"use_mask": False},
    "jmmda_no_dwt": {"use_dwt": False},
    "jmmda_no_adaptive_fusion": {"use_adaptive_fusion": False},
}


def train_and_eval(name, overrides, train, test, args, out):
    from jmmda_model.networks import GeneratorConfig
    from jmmda_model.report import evaluate_cases
    from jmmda_model.trainer import TrainConfig, Trainer

    g = GeneratorConfig(base_channels=args.base_channels, **overrides)
    cfg = TrainConfig(generator=g.to_dict(), epochs=args.epochs, max_steps_per_epoch=max(1, args.steps // args.epochs),
                      batch_size=args.batch_size, lr_g=args.lr, lr_d=args.lr, seed=args.seed, progress=False, tensorboard=False)
    t = time.time()
    summary = Trainer(cfg, out / name).fit(train, [], resume=False)
    train_s = time.time() - t
    res = evaluate_cases(out / name / "model.pt", test, out / name / "eval")
    return {"arch": g.to_dict(), "steps": summary["global_step"], "train_seconds": round(train_s, 1), "summary": res["summary"]}


INFER_CHILD = r"""
import json, sys, threading, time, psutil, torch, numpy as np
sys.path.insert(0, sys.argv[1])
from jmmda_model.networks import GeneratorConfig, build_generator
from jmmda_model.inference import predict_slices
torch.manual_seed(0)
cfg = json.loads(sys.argv[2]); n = int(sys.argv[3]); h, w = int(sys.argv[4]), int(sys.argv[5])
net = build_generator(GeneratorConfig(**cfg)).eval()
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu"); net.to(dev)
x = np.random.rand(n, 2, h, w).astype(np.float32)
proc = psutil.Process()
base = proc.memory_info().rss
peak = [base]
stop = threading.Event()
def sample():  # resident memory sampled every millisecond while inference runs
    while not stop.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss); time.sleep(0.001)
sampler = threading.Thread(target=sample); sampler.start()
predict_slices(net, x[:2], dev)  # warm-up
if dev.type == "cuda": torch.cuda.reset_peak_memory_stats(); torch.cuda.synchronize()
times = []
for _ in range(3):
    t = time.perf_counter(); predict_slices(net, x, dev, batch_size=8)
    if dev.type == "cuda": torch.cuda.synchronize()
    times.append(time.perf_counter() - t)
stop.set(); sampler.join()
used = torch.cuda.max_memory_allocated() if dev.type == "cuda" else peak[0] - base
print(json.dumps({"seconds": float(np.median(times)), "peak_bytes": int(used), "device": dev.type,
                  "params": sum(p.numel() for p in net.parameters())}))
"""


def inference_cost(cfg: dict, slices: int, h: int, w: int) -> dict:
    """Measured in a fresh process so one model's memory does not hide the other's. Memory: peak GPU
    allocation on CUDA; on CPU the peak resident-set growth during inference (1 ms sampling)."""
    r = subprocess.run([sys.executable, "-c", INFER_CHILD, str(ROOT), json.dumps(cfg), str(slices), str(h), str(w)],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def fmt(s):
    return f"{s['mean']:.4f} ± {s['sd']:.4f}" if np.isfinite(s["mean"]) else "n/a"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-cases", type=int, default=16)
    ap.add_argument("--steps", type=int, default=300, help="optimiser steps per arm (same budget for all)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--base-channels", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--test-ids", default="", help="comma-separated sample case ids (default: all committed samples)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench"))
    ap.add_argument("--infer-only", action="store_true", help="only the inference time/memory comparison")
    args = ap.parse_args()

    from jmmda_model.data import find_cases
    from jmmda_model.phantom import write_datastore

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"config": vars(args), "arms": {}}

    if not args.infer_only:
        test = find_cases(ROOT / "sample_data" / "studies")
        if args.test_ids:
            want = set(args.test_ids.split(","))
            test = [c for c in test if c.id in want]
        train_dir = Path(tempfile.mkdtemp(prefix="jmmda_bench_"))
        print(f"generating {args.train_cases} training phantoms in {train_dir} ...", flush=True)
        write_datastore(train_dir, args.train_cases, first_seed=1000)
        train = find_cases(train_dir)
        for name in args.arms.split(","):
            print(f"== {name}: {args.steps} steps", flush=True)
            results["arms"][name] = train_and_eval(name, ARMS[name], train, test, args, out)
        keys = ["mse", "psnr", "ssim", "psnr_brain", "ssim_brain", "lesion_mae", "superpixel_r"]
        lines = ["| model | " + " | ".join(keys) + " | train s |", "|---|" + "---|" * (len(keys) + 1)]
        for name, r in results["arms"].items():
            lines.append(f"| {name} | " + " | ".join(fmt(r["summary"][k]) for k in keys) + f" | {r['train_seconds']} |")
        table = "\n".join(lines)
        print("\nHeld-out phantom cases (n=%d), same budget (%d steps, batch %d):\n" % (len(test), args.steps, args.batch_size))
        print(table)
        results["table"] = table

    h, w, n = 112, 96, 36  # one sample volume: 36 axial slices of 112 x 96
    jm = inference_cost({"base_channels": args.base_channels}, n, h, w)
    p2p = inference_cost({"base_channels": args.base_channels, **ARMS["pix2pix"]}, n, h, w)
    ratio_t = jm["seconds"] / p2p["seconds"]
    ratio_m = jm["peak_bytes"] / max(p2p["peak_bytes"], 1)
    results["inference"] = {"jmmda": jm, "pix2pix": p2p, "time_ratio": ratio_t, "memory_ratio": ratio_m}
    print(f"\nInference on one {n}-slice volume ({jm['device']}): JMMDA {jm['seconds']:.3f} s, pix2pix {p2p['seconds']:.3f} s"
          f" -> time ratio JMMDA/pix2pix = {ratio_t:.2f}")
    print(f"Peak memory: JMMDA {jm['peak_bytes'] / 2**20:.1f} MiB, pix2pix {p2p['peak_bytes'] / 2**20:.1f} MiB"
          f" -> memory ratio JMMDA/pix2pix = {ratio_m:.2f}")
    print(f"Parameters: JMMDA {jm['params']:,}, pix2pix {p2p['params']:,}")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    md = ["# Benchmark results", "", results.get("table", ""), "",
          f"Inference time ratio JMMDA/pix2pix: {ratio_t:.2f}; peak memory ratio: {ratio_m:.2f} ({jm['device']})"]
    (out / "results.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
