#!/usr/bin/env python
"""`jmmda infer` wall time (benchmarks/infer_wall.py, in-process, median of the repeats) alone, beside a second
inference process, and beside a `jmmda train` process (what the server does while research staff retrain), with
OpenMP's default waiting and with OMP_WAIT_POLICY=PASSIVE; every process with the default thread count (2 here).

    python benchmarks/records/omp_wait_2026-12-06/beside_training.py --out runs/omp_wait [--repeats 5]
Prints one JSON line per measurement."""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CT = ROOT / "sample_data" / "studies" / "phantom_007.nii.gz"
MASK = ROOT / "sample_data" / "studies" / "labels" / "brainmask" / "phantom_007.nii.gz"
MODEL = ROOT / "apps" / "ct2dwi" / "model" / "jmmda_demo.pt"


def env_for(policy):
    e = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if policy:
        e["OMP_WAIT_POLICY"] = policy
    return e


def infer(policy, repeats):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "infer_wall.py"), "--model", str(MODEL), "--ct", str(CT),
           "--mask", str(MASK), "--repeats", str(repeats)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env_for(policy))


def median_of(proc):
    out, _ = proc.communicate(timeout=1200)
    m = re.search(r"median ([0-9.]+) s", out)
    assert m, out
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for policy in (None, "PASSIVE"):
        name = policy or "default"
        print(json.dumps({"policy": name, "setting": "alone", "median_s": median_of(infer(policy, a.repeats))}), flush=True)
        pair = [infer(policy, a.repeats) for _ in range(2)]
        print(json.dumps({"policy": name, "setting": "beside a second inference",
                          "median_s": [median_of(p) for p in pair]}), flush=True)
        run = out / f"train_{name}"
        shutil.rmtree(run, ignore_errors=True)
        train = subprocess.Popen([sys.executable, "-m", "jmmda_model.cli", "train", "--data", str(ROOT / "sample_data" / "studies"),
                                  "--out", str(run), "--epochs", "1000", "--max-steps-per-epoch", "20", "--batch-size", "8",
                                  "--n-val", "0", "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env=env_for(policy))
        time.sleep(20)  # past its start-up: training steps
        try:
            print(json.dumps({"policy": name, "setting": "beside jmmda train",
                              "median_s": median_of(infer(policy, a.repeats))}), flush=True)
        finally:
            train.kill()
            train.wait()
        steps = sum(1 for _ in (run / "checkpoints").glob("*")) if (run / "checkpoints").exists() else 0
        print(json.dumps({"policy": name, "train_checkpoint_files": steps}), flush=True)


if __name__ == "__main__":
    main()
