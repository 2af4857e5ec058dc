"""Pairs the smoothed-difference audits with the shipped demo's own audit on the same cases (per case false-bright,
PSNR, the issue's lesions shown), and false-bright by thirds of the phantoms' CT noise.

    python benchmarks/records/smooth_diff_2026-12-05/compare.py runs/audit_sd1 runs/audit_sd2
"""
import json
import sys
from pathlib import Path

import numpy as np

REC = Path(__file__).resolve().parents[1]
base = {}
for h in ("a", "b"):
    for line in (REC / "audit_demo_candidate_2026-12-05" / h / "cases.jsonl").read_text().splitlines():
        d = json.loads(line)
        base[d["case"]] = d
noise = {json.loads(x)["case"]: json.loads(x)["ct_noise_hu"]
         for x in (REC / "fb_noise_2026-12-05" / "cases_meta.jsonl").read_text().splitlines()}


def shown(d):
    return sum(1 for x in d["lesions"] if x["qualifying"] and x["shown"])


for folder in sys.argv[1:]:
    rows = [json.loads(x) for x in (Path(folder) / "cases.jsonl").read_text().splitlines()]
    ids = [r["case"] for r in rows]
    fb = np.array([r["false_bright_ml"] for r in rows])
    fb0 = np.array([base[c]["false_bright_ml"] for c in ids])
    ps = np.array([r["psnr_brain"] for r in rows]) - np.array([base[c]["psnr_brain"] for c in ids])
    sh, sh0 = sum(shown(r) for r in rows), sum(shown(base[c]) for c in ids)
    nq = sum(1 for r in rows for x in r["lesions"] if x["qualifying"])
    d = fb - fb0
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
    print(f"{folder}: {len(rows)} cases; false-bright {fb.mean():.1f} vs {fb0.mean():.1f} mL/case "
          f"(paired {d.mean():+.1f} [{d.mean() - half:+.1f}, {d.mean() + half:+.1f}]); PSNR {ps.mean():+.2f} dB; "
          f"qualifying lesions shown {sh} vs {sh0} of {nq}")
    n = np.array([noise[c] for c in ids])
    t = np.quantile(n, [1 / 3, 2 / 3])
    for lo, hi, name in ((0, t[0], "low"), (t[0], t[1], "mid"), (t[1], 99, "high")):
        s = (n >= lo) & (n < hi)
        print(f"   CT noise {name} third (n={s.sum()}): false-bright {fb[s].mean():.1f} vs {fb0[s].mean():.1f}")
