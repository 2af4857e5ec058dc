"""How many seeds a recipe comparison on this CPU needs (planning; from the committed records only, no training):

    python benchmarks/records/seed_intervals_2026-12-05/power.py > benchmarks/records/seed_intervals_2026-12-05/power.md

For each recipe change of 2026-12-04/05 against the lifted-prior run (A), the spread (sd) of the three seeds' mean
paired differences B - A (paired_runs.py's interval over seeds, its half-width turned back into an sd), on the
120-phantom audits where they exist, else the curves at step 1000, and the seeds n at which the paired t interval
over seeds, t(0.975, n-1) x sd / sqrt(n), is as narrow as a difference worth finding (false-bright 2 mL/case,
in-brain PSNR 0.1 dB, qualifying lesions shown 0.02 per case); also pooled over the changes (mean of the variances).
"""
import math
import sys
import types
from pathlib import Path

from scipy import stats

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))
import paired_runs  # noqa: E402

R = ROOT / "benchmarks" / "records"
LIFT = R / "cpu_lift_2026-12-04"
AUDIT_A = [R / "cpu_lift15_2026-12-05/audits" / f"lift10_s{s}" for s in range(3)]
CHANGES = {  # name: (curve record, audit folder stem or None)
    "learning rate 1e-4": ("cpu_lr1e4_2026-12-04", None),
    "adversarial weight 0.5": ("cpu_adv05_2026-12-04", None),
    "cosine learning rate": ("cpu_cos_2026-12-05", None),
    "prior lift 15 HU": ("cpu_lift15_2026-12-05", "lift15"),
    "hard-negative crops 1/3": ("cpu_hn33_2026-12-05", "hn33"),
    "CT-noise augmentation 5 HU": ("cpu_noise5_2026-12-05", "noise5"),
    "residual bound 0.05": ("cpu_rb05_2026-12-05", "rb05"),
}
KEYS = {"false_bright_ml": (2.0, 5.0), "psnr_brain": (0.1, 0.3), "shown": (0.02, 0.05)}  # worth finding


def seed_sd(res, k):
    d, lo, hi, n = res["paired_by_seed"][k]
    return (hi - lo) / 2 * math.sqrt(n) / stats.t.ppf(0.975, n - 1)


def seeds_needed(sd, h, most=200):
    if sd == 0:
        return "- (the same in every seed)"
    return next((n for n in range(2, most + 1) if stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) <= h), f"> {most}")


print("# Seeds a recipe comparison needs on this CPU (1000 steps, 3 seeds per recipe so far)\n")
print("sd = the spread of the 3 seeds' mean paired differences B - A; n = seeds for a 95 % half-width of "
      + ", ".join(f"{small:g} ({paired_runs.LABEL[k]})" for k, (small, _) in KEYS.items()) + ".\n")
print("| change | source | " + " | ".join(f"{paired_runs.LABEL[k]}: sd; n" for k in KEYS) + " |")
print("|---|---|" + "---|" * len(KEYS))
var = {k: [] for k in KEYS}
for name, (rec, stem) in CHANGES.items():
    if stem:
        res = paired_runs.cmd_audits(types.SimpleNamespace(
            a=",".join(map(str, AUDIT_A)), b=",".join(str(R / rec / "audits" / f"{stem}_s{s}") for s in range(3))))
        src = "audits, 3 x 120"
    else:
        res = paired_runs.cmd_curves(types.SimpleNamespace(a=str(LIFT), b=str(R / rec), arm="jmmda", arm_b=None,
                                                           seeds="0,1,2", step=1000, mean_over_steps=False, from_step=0))
        src = "curves at 1000, 3 x 24"
    sds = {k: seed_sd(res, k) for k in KEYS}
    for k, v in sds.items():
        var[k].append(v * v)
    print(f"| {name} | {src} | " + " | ".join(f"{v:.2f}; {seeds_needed(v, KEYS[k][0])}" for k, v in sds.items()) + " |")
print("\n| measure | pooled sd over seeds | seeds for a 95 % half-width of | seeds for |")
print("|---|---|---|---|")
for k, (small, large) in KEYS.items():
    sd = math.sqrt(sum(var[k]) / len(var[k]))
    print(f"| {paired_runs.LABEL[k]} | {sd:.2f} | {small:g}: {seeds_needed(sd, small)} | {large:g}: {seeds_needed(sd, large)} |")
