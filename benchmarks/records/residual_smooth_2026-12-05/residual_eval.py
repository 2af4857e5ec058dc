#!/usr/bin/env python
"""Where the shipped demo loses PSNR against its own lookup table, and whether smoothing or shrinking its residual
over the table wins it back. Reads the served-path dumps of bright_gate_2026-12-05/dump_cases.py.

    .venv/bin/python benchmarks/records/residual_smooth_2026-12-05/residual_eval.py CASEDIR [CASEDIR ...]

1. The in-brain squared error of the synthesis minus that of the table, summed per region and divided by the
   brain's voxels (so the three parts add up to MSE(demo) - MSE(table)): the false-bright voxels, the lesions
   dilated by 2 voxels (the audit's excluded zone), the rest of the brain.
2. Rules on the residual r = synthesis - table: smoothed in the slice (Gaussian sigma in pixels, normalised inside
   the brain), scaled by alpha, or both. Scored as the audit scores a synthesis; also every lesion (any size) the
   model as shipped shows and the rule does not.
"""
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from jmmda_model.metrics import lesion_metrics, psnr, qualifying  # noqa: E402

FULL = np.ones((3, 3, 3), bool)
RULES = [("as shipped", None, None), *[(f"residual smoothed, sigma {s} px", s, None) for s in (0.7, 1.0, 1.5, 2.5, 4.0)],
         *[(f"residual x {a}", None, a) for a in (0.9, 0.8, 0.7, 0.6, 0.5)],
         *[(f"residual smoothed, sigma {s} px, x {a}", s, a) for s in (1.5, 2.5) for a in (0.8, 0.7)]]


def render(c, sigma, alpha):
    b = c["brain"] > 0
    r = (c["y"] - c["prior"]) * b
    if sigma:
        w = ndi.gaussian_filter(b.astype(np.float32), (0, sigma, sigma))
        r = ndi.gaussian_filter(r, (0, sigma, sigma)) / np.maximum(w, 1e-3)
    if alpha is not None:
        r = r * alpha
    return np.clip(c["prior"] + r, 0.0, 1.0) * b


def main(dirs):
    files = sorted(f for d in dirs for f in Path(d).glob("case_*.npz"))
    parts = np.zeros(3)
    n_vox = 0
    totals = {name: {"shown": 0, "q": 0, "dq": 0, "d": 0, "n": 0, "lost": 0, "fb": [], "psnr": []} for name, _, _ in RULES}
    for f in files:
        c = dict(np.load(f))
        b = c["brain"] > 0
        les = lesion_metrics(c["y"], c["dwi"], c["brain"], c["lesion"], c["ct"], tuple(c["spacing"]), masks=True)
        fb = les["false_bright_mask"]
        near = ndi.binary_dilation(c["lesion"] > 0, FULL, iterations=2) & b
        d = (c["y"] - c["dwi"]) ** 2 - (c["prior"] - c["dwi"]) ** 2
        rest = b & ~fb & ~near
        parts += [d[fb].sum(), d[near].sum(), d[rest].sum()]
        n_vox += int(b.sum())
        shipped_shown = None
        for name, sigma, alpha in RULES:
            y = render(c, sigma, alpha) if (sigma or alpha is not None) else c["y"]
            m = lesion_metrics(y, c["dwi"], c["brain"], c["lesion"], c["ct"], tuple(c["spacing"]))
            q = [x for x in m["lesions"] if qualifying(x)]
            t = totals[name]
            shown = [x["shown"] for x in m["lesions"]]
            shipped_shown = shown if shipped_shown is None else shipped_shown  # RULES[0]: the model as shipped
            t["lost"] += sum(a and not b for a, b in zip(shipped_shown, shown))
            t["shown"] += sum(x["shown"] for x in q)
            t["q"] += len(q)
            t["dq"] += sum(x["darker"] for x in q)
            t["d"] += sum(x["darker"] for x in m["lesions"])
            t["n"] += len(m["lesions"])
            t["fb"].append(m["false_bright_ml"])
            t["psnr"].append(psnr(y, c["dwi"], c["brain"]))
    parts /= n_vox
    print(f"{len(files)} cases ({files[0].name} ..)\n")
    print("MSE(demo) - MSE(table), in-brain, by where the error lies (x 1e-4):")
    for name, v in zip(("false-bright voxels", "lesions (+2 voxels)", "rest of the brain"), parts):
        print(f"  {name:22s} {v * 1e4:+.2f}")
    print(f"  {'total':22s} {parts.sum() * 1e4:+.2f}\n")
    print("| rule | issue's lesions shown | shown lesions lost (any size) | qualifying darker | all darker | "
          "false-bright mL/case | in-brain PSNR dB |")
    print("|---|---|---|---|---|---|---|")
    for name, _, _ in RULES:
        t = totals[name]
        print(f"| {name} | {t['shown']} / {t['q']} | {t['lost']} | {t['dq']} | {t['d']} / {t['n']} | {np.mean(t['fb']):.2f} | "
              f"{np.mean(t['psnr']):.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
