#!/usr/bin/env python
"""A probability floor for the rendering, on dumped served-path cases (record bright_gate_2026-12-05's
``dump_cases.py``): where the calibrated infarct probability reaches tau, the synthetic DWI is rendered at least
R x the brain's median synthesis ("the lesion head decides the least brightness of what it finds"). Counted as
``lesion_audit.py`` counts (``rule_eval.count`` of the bright-gate record): the issue's lesions shown, darker,
any shown lesion lost, false-bright mL/case, in-brain PSNR.

    python floor_eval.py --tuning CASEDIR      every (tau, R) of the grid (tuning phantoms)
    python floor_eval.py --test CASEDIR        only the rules fixed on the tuning phantoms (CHOSEN below)
"""
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "bright_gate_2026-12-05"))
from rule_eval import count  # noqa: E402

#: fixed from the tuning phantoms' output (floor_tuning_50000-50039.txt) before the test dump was read
CHOSEN = []


def floor(y, prob, brain, tau, ratio):
    b = brain > 0
    if tau >= 1.0:
        return y
    ref = float(np.median(y[b]))
    out = y.copy()
    hit = b & (prob >= tau)
    out[hit] = np.maximum(out[hit], ratio * ref)
    return out


def main():
    mode, *dirs = sys.argv[1:]
    files = sorted(f for d in dirs for f in Path(d).glob("case_*.npz"))
    cases = [dict(np.load(f)) for f in files]
    print(f"{len(cases)} cases ({files[0].stem}..{files[-1].stem})")
    grid = ([(t, r) for t in (0.5, 0.7, 0.8, 0.9) for r in (1.3, 1.4, 1.5, 1.7)] if mode == "--tuning" else CHOSEN)
    for tau, r in [(1.0, 1.0)] + grid:
        count(cases, lambda c: floor(c["y"], c["prob"], c["brain"], tau, r),
              "as the model renders" if tau >= 1.0 else f"floor: p >= {tau:.2f} rendered >= {r:.2f} x median")




def why(dirs, tau=0.8):
    """Per qualifying lesion of the dumped cases: shown, found by the map at ``tau`` (a voxel >= tau), the share
    of its voxels at >= tau, its synthetic ratio. ``python floor_eval.py --why CASEDIR``."""
    from jmmda_model.metrics import lesion_metrics, qualifying

    files = sorted(f for d in dirs for f in Path(d).glob("case_*.npz"))
    rows = []
    for f in files:
        c = dict(np.load(f))
        les = lesion_metrics(c["y"], c["dwi"], c["brain"], c["lesion"], c["ct"], tuple(c["spacing"]), masks=True)
        for k, x in enumerate(les["lesions"], 1):
            if qualifying(x):
                p = c["prob"][les["labels"] == k]
                rows.append((f.stem, x["shown"], bool(p.max() >= tau), float((p >= tau).mean()), x["ratio_syn"], x["volume_ml"]))
    print(f"{len(rows)} qualifying lesions; tau {tau}")
    for shown in (True, False):
        for found in (True, False):
            sel = [r for r in rows if r[1] == shown and r[2] == found]
            share = f", share of voxels >= tau median {np.median([r[3] for r in sel]):.2f}" if sel else ""
            print(f"shown {shown!s:5} found {found!s:5}: {len(sel)}{share}")
    for r in rows:
        if r[2] and not r[1]:
            print(f"  found, not shown: {r[0]} share {r[3]:.2f} ratio {r[4]:.2f} volume {r[5]:.1f} mL")


if __name__ == "__main__":
    why(sys.argv[2:]) if sys.argv[1:2] == ["--why"] else main()
