#!/usr/bin/env python
"""Would a richer lookup table predict the DWI better than the tissue prior's (smoothed HU x distance to the edge)?

    .venv/bin/python benchmarks/records/prior_variants_2026-12-05/prior_variants.py [N_TRAIN] [N_TEST] > out.md
    .venv/bin/python benchmarks/records/prior_variants_2026-12-05/prior_variants.py N_TRAIN N_TEST noise-free > out.md

Tables of mean normalised DWI over binned per-voxel features, fitted on the demo's training phantoms (seeds
100..) and scored on the audit's test phantoms (30000..) by in-brain PSNR against the real DWI, each paired per case
with the shipped demo's own prior (its table refitted here on the same training cases, 10 HU mirror lift; checked
against the checkpoint's). Features:

* ``hu``: the prior's CT (smoothed by 1 pixel in the slice, lifted up to 10 HU towards its mirror image);
* ``rel``: the same minus the case's own parenchyma median (CT 15-60 HU in the brain), plus 30 HU: tissue HU
  relative to the case's level (the phantoms' GM and WM HU vary by case and so do scanners);
* ``ctx``: the lifted CT smoothed by 3 pixels, relative to the same median (the neighbourhood: cortex or deep
  white matter);
* ``frac``: the same CT placed between the case's parenchyma quartiles (0 at the 25th percentile, 1 at the 75th):
  a grey-matter fraction of sorts, free of the case's HU level and contrast;
* ``dist``: distance to the brain's edge (mm), the prior's bins.
A cell empty in training takes the shipped-style table's value. ``noise-free``: every phantom (training and test)
drawn without its CT noise (``PhantomConfig(ct_noise=False)``, the same heads): what the CT's noise costs a table.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from jmmda_model.prior import DIST_EDGES, HU_EDGES, TissuePrior  # noqa: E402

LIFT = 10.0
REL_EDGES = HU_EDGES
CTX_EDGES = np.arange(-10.0, 72.0, 4.0)
VARIANTS = {
    "rel x dist": ("rel", "dist"),
    "hu x ctx x dist": ("hu", "ctx", "dist"),
    "rel x ctx x dist": ("rel", "ctx", "dist"),
    "frac x dist": ("frac", "dist"),
    "frac x ctx x dist": ("frac", "ctx", "dist"),
}
EDGES = {"hu": HU_EDGES, "rel": REL_EDGES, "ctx": CTX_EDGES, "dist": DIST_EDGES, "frac": np.arange(-2.0, 3.05, 0.1)}


def features(lc) -> dict:
    b = lc.brain > 0
    sm = lambda a, s: ndi.gaussian_filter(np.asarray(a, np.float32), (0.0, s, s))
    hu = sm(lc.ct_hu, 1.0)
    hu += np.clip(sm(lc.mirror_hu, 1.0) - hu, 0.0, LIFT)
    ctx = sm(lc.ct_hu, 3.0)
    ctx += np.clip(sm(lc.mirror_hu, 3.0) - ctx, 0.0, LIFT)
    par = b & (lc.ct_hu > 15) & (lc.ct_hu < 60)
    ref = float(np.median(lc.ct_hu[par])) if par.any() else 30.0
    dist = ndi.distance_transform_edt(b, sampling=lc.spacing_zyx)
    lo, hi = (float(v) for v in np.percentile(hu[par], (25, 75))) if par.any() else (25.0, 35.0)
    f = {"hu": hu, "rel": hu - ref + 30.0, "ctx": ctx - ref + 30.0, "dist": dist, "frac": (hu - lo) / max(hi - lo, 1.0)}
    return {k: np.digitize(v[b], EDGES[k]) for k, v in f.items()}


def index(f, names):
    idx = np.zeros_like(f[names[0]], dtype=np.int64)
    for k in names:
        idx = idx * (len(EDGES[k]) + 1) + f[k]
    return idx


def main(n_train=120, n_test=60, noise_free=False):
    from jmmda_model.metrics import psnr
    from jmmda_model.phantom import PhantomConfig
    from jmmda_model.phantom import loaded_case as drawn
    from jmmda_model.preprocess import PreprocessConfig

    import torch

    pre = PreprocessConfig.from_dict({**PreprocessConfig().to_dict(), "mirror_channels": True})
    loaded_case = (lambda s, p: drawn(s, p, PhantomConfig(ct_noise=False))) if noise_free else drawn
    t0 = time.time()
    train = [loaded_case(s, pre) for s in range(100, 100 + n_train)]
    base = TissuePrior(mirror_lift_hu=LIFT).fit(train)
    shipped = TissuePrior.from_dict(torch.load(ROOT / "apps/ct2dwi/model/jmmda_demo.pt", map_location="cpu",
                                               weights_only=False)["preprocess"]["tissue_prior"])
    sums = {v: {} for v in VARIANTS}
    for lc in train:
        f = features(lc)
        y = lc.dwi[lc.brain > 0]
        for v, names in VARIANTS.items():
            i = index(f, names)
            s = np.bincount(i, y)
            n = np.bincount(i)
            acc = sums[v]
            if "s" not in acc:
                acc["s"], acc["n"] = s, n
            else:
                m = max(len(acc["s"]), len(s))
                acc["s"] = np.pad(acc["s"], (0, m - len(acc["s"]))) + np.pad(s, (0, m - len(s)))
                acc["n"] = np.pad(acc["n"], (0, m - len(acc["n"]))) + np.pad(n, (0, m - len(n)))
    del train
    print(f"fitted on {n_train} training phantoms (seeds 100..) in {time.time() - t0:.0f} s", file=sys.stderr)
    rows = []
    for s in range(30000, 30000 + n_test):
        lc = loaded_case(s, pre)
        b = lc.brain > 0
        p0 = base.predict(lc.ct_hu, lc.brain, lc.spacing_zyx, lc.mirror_hu)
        row = {"shipped prior": psnr(shipped.predict(lc.ct_hu, lc.brain, lc.spacing_zyx, lc.mirror_hu), lc.dwi, lc.brain),
               "hu x dist (refitted)": psnr(p0, lc.dwi, lc.brain)}
        f = features(lc)
        for v, names in VARIANTS.items():
            i = index(f, names)
            acc = sums[v]
            ok = i < len(acc["n"])
            cell_n = np.where(ok, acc["n"][np.minimum(i, len(acc["n"]) - 1)], 0)
            cell_s = np.where(ok, acc["s"][np.minimum(i, len(acc["s"]) - 1)], 0.0)
            pred = p0.copy()
            pred[b] = np.where(cell_n >= 20, cell_s / np.maximum(cell_n, 1), p0[b])
            row[v] = psnr(pred, lc.dwi, lc.brain)
        rows.append(row)
    from scipy import stats

    n = len(rows)
    tq = stats.t.ppf(0.975, n - 1)
    print(f"{n_test} test phantoms (30000..), tables fitted on {n_train} training phantoms (100..); in-brain PSNR dB"
          + ("; every CT without its noise.\n" if noise_free else ".\n"))
    print("| table | mean PSNR | minus the shipped prior (95 % CI) |\n|---|---|---|")
    for k in rows[0]:
        d = np.array([r[k] - r["shipped prior"] for r in rows])
        h = tq * d.std(ddof=1) / math.sqrt(n) if n > 1 else float("nan")
        print(f"| {k} | {np.mean([r[k] for r in rows]):.2f} | {d.mean():+.2f} [{d.mean() - h:+.2f}, {d.mean() + h:+.2f}] |")


if __name__ == "__main__":
    main(*(int(v) for v in sys.argv[1:3]), noise_free=sys.argv[3:4] == ["noise-free"])
