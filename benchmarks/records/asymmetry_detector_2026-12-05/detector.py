#!/usr/bin/env python
"""What does the CT's hemispheric difference alone hold? A classical asymmetry detector beside the network.

    .venv/bin/python benchmarks/records/asymmetry_detector_2026-12-05/detector.py tune 50000:50040 runs/det_tune.jsonl
    .venv/bin/python benchmarks/records/asymmetry_detector_2026-12-05/detector.py test 30000:30060 runs/det_a.jsonl SXY SZ K
    .venv/bin/python benchmarks/records/asymmetry_detector_2026-12-05/detector.py summary runs/det_tune.jsonl [...]

No learning beyond the shipped demo's lookup table (its tissue prior, 10 HU mirror lift) and three numbers. The CT
minus its mirror image across the mid-sagittal plane (the product's plane and mirror, as the audit builds them),
only where both lie in 15-60 HU (parenchyma: CSF, old infarcts and bone left out) and clipped to +-15 HU, is
smoothed by a Gaussian (sigma SXY pixels in the slice, SZ slices across; normalised by the smoothed parenchyma
mask) and divided by its robust spread over the case's parenchyma (1.4826 x MAD). Voxels where the CT is darker
than its mirror by more than K spreads, in connected clusters of >= 0.5 mL, are rendered at 1.7 x the table's
brain median; everywhere else the table. Scored as the audit scores a synthesis (the issue's lesions shown and
darker, false-bright mL, in-brain PSNR). ``tune`` sweeps the grid on the tuning phantoms (50000.., used by no
training); ``test`` runs one setting, fixed beforehand, on the audit's test phantoms.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks/records/dwi_ceiling_2026-12-05"))
from ceiling import pending_cases, score  # noqa: E402  (the same test phantoms, table and figures as the ceiling)

GRID = [(sxy, sz, k) for sxy in (1.5, 2.5, 4.0) for sz in (0.0, 0.7) for k in (2.0, 2.5, 3.0, 3.5, 4.0)]
LEVEL = 1.7
MIN_ML = 0.5


def zmap(lc, sxy: float, sz: float) -> np.ndarray:
    b = lc.brain > 0
    par = (b & (lc.ct_hu > 15) & (lc.ct_hu < 60) & (lc.mirror_hu > 15) & (lc.mirror_hu < 60)).astype(np.float32)
    d = np.clip(lc.mirror_hu - lc.ct_hu, -15.0, 15.0) * par
    sig = (sz, sxy, sxy)
    ds = ndi.gaussian_filter(d, sig) / np.maximum(ndi.gaussian_filter(par, sig), 1e-3)
    v = ds[par > 0]
    spread = 1.4826 * float(np.median(np.abs(v - np.median(v))))
    return np.where(par > 0, (ds - np.median(v)) / max(spread, 1e-3), 0.0)


def render(lc, prior: np.ndarray, z: np.ndarray, k: float) -> np.ndarray:
    b = lc.brain > 0
    vox_ml = float(np.prod(lc.spacing_zyx)) / 1000.0
    cand = (z > k) & b
    lab, n = ndi.label(cand, np.ones((3, 3, 3), bool))
    out = prior.copy()
    if n:
        sizes = np.bincount(lab.ravel())[1:] * vox_ml
        keep = np.isin(lab, 1 + np.flatnonzero(sizes >= MIN_ML))
        out[keep] = LEVEL * float(np.median(prior[b]))
    return out


def run(seeds, out: Path, grid) -> None:
    t0 = time.time()
    for _, lc, table in pending_cases(seeds, out):
        prior = table.predict(lc.ct_hu, lc.brain, lc.spacing_zyx, lc.mirror_hu) * (lc.brain > 0)
        row = {"case": lc.id, "table": score(prior, lc), "settings": {}}
        zs = {}
        for sxy, sz, k in grid:
            if (sxy, sz) not in zs:
                zs[(sxy, sz)] = zmap(lc, sxy, sz)
            row["settings"][f"{sxy}/{sz}/{k}"] = score(render(lc, prior, zs[(sxy, sz)], k), lc)
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{lc.id} ({time.time() - t0:.0f} s)", flush=True)


def summary(paths) -> str:
    rows = [json.loads(x) for p in paths for x in Path(p).read_text().splitlines() if x.strip()]
    lines = [f"{len(rows)} phantoms ({rows[0]['case']} ..). Setting: SXY pixels / SZ slices / K spreads.", "",
             "| setting | issue's lesions shown | qualifying darker | all darker | false-bright mL/case | in-brain PSNR dB |",
             "|---|---|---|---|---|---|"]

    def line(name, v):
        lines.append(f"| {name} | {sum(x['shown'] for x in v)} / {sum(x['qualifying'] for x in v)} | "
                     f"{sum(x['darker_qualifying'] for x in v)} | {sum(x['darker'] for x in v)} / {sum(x['lesions'] for x in v)} | "
                     f"{np.mean([x['false_bright_ml'] for x in v]):.1f} | {np.mean([x['psnr_brain'] for x in v]):.2f} |")

    line("table alone", [r["table"] for r in rows])
    for key in rows[0]["settings"]:
        line(key, [r["settings"][key] for r in rows])
    return "\n".join(lines)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "summary":
        print(summary(sys.argv[2:]))
    else:
        first, end = (int(v) for v in sys.argv[2].split(":"))
        grid = GRID if cmd == "tune" else [tuple(float(v) for v in sys.argv[4:7])]
        run(range(first, end), Path(sys.argv[3]), grid)
