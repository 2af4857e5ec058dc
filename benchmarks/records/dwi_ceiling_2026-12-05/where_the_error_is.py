#!/usr/bin/env python
"""Where the lookup table's squared error lies, beside the CT-only anatomy oracle's (ceiling.py's ``anatomy_pop``).

    .venv/bin/python benchmarks/records/dwi_ceiling_2026-12-05/where_the_error_is.py FIRST:END > where.txt

Per region: its share of the brain, and each predictor's squared error summed there and divided by the brain's voxel
count (so the regions of one predictor add up to its in-brain MSE), pooled over the cases; and per voxel.
Regions: distance to the brain's edge, the lowest quarter of the brain's slices, the true lesions, and the
oracle's own value (a tissue proxy: CSF-like below 0.12, white matter about 0.2, grey matter about 0.27, lesions
above 0.3).
"""
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ceiling import MODEL, axial  # noqa: E402

from jmmda_model.phantom import PhantomConfig, loaded_case, make_case  # noqa: E402
from jmmda_model.preprocess import PreprocessConfig  # noqa: E402
from jmmda_model.prior import TissuePrior  # noqa: E402

VALUE_EDGES = [0.12, 0.2, 0.235, 0.265, 0.3]


def main(first, end):
    table = TissuePrior.from_dict(torch.load(MODEL, map_location="cpu", weights_only=False)["preprocess"]["tissue_prior"])
    pre = PreprocessConfig.from_dict({**PreprocessConfig().to_dict(), "mirror_channels": True})
    acc, n_brain = {}, 0
    for s in range(first, end):
        lc = loaded_case(s, pre)
        b = lc.brain > 0
        t = table.predict(lc.ct_hu, lc.brain, lc.spacing_zyx, lc.mirror_hu)
        raw = axial(make_case(s, PhantomConfig(dwi_effects=(), dwi_tissue=(1.0, 0.81, 0.21)))["dwi"]).astype(float)
        o = np.clip(raw / np.median(raw[b]) * 0.25, 0.0, 1.0)
        dist = ndi.distance_transform_edt(b, sampling=lc.spacing_zyx)
        zb = np.flatnonzero(b.any((1, 2)))
        height = np.broadcast_to(((np.arange(b.shape[0]) - zb.min()) / max(zb.max() - zb.min(), 1))[:, None, None], b.shape)
        et, eo = (t - lc.dwi) ** 2, (o - lc.dwi) ** 2
        value = np.digitize(o, VALUE_EDGES)
        regions = {"edge 0-3 mm": dist < 3, "edge 3-8 mm": (dist >= 3) & (dist < 8), "deeper than 8 mm": dist >= 8,
                   "lowest quarter of slices": height < 0.25, "true lesions": lc.lesion > 0}
        for k, name in enumerate(("< 0.12 (CSF-like)", "0.12-0.2", "0.2-0.235 (WM)", "0.235-0.265", "0.265-0.3 (GM)", ">= 0.3 (lesion)")):
            regions[f"oracle value {name}"] = value == k
        for name, m in regions.items():
            m = m & b
            a = acc.setdefault(name, np.zeros(3))
            a += [et[m].sum(), eo[m].sum(), m.sum()]
        n_brain += int(b.sum())
    print(f"phantoms {first}..{end - 1}; squared error x 1e-4 (normalised DWI): pooled share of the in-brain MSE / per voxel")
    print(f"{'region':34s} {'brain %':>8s} {'table':>14s} {'anatomy oracle':>16s}")
    for name, (st, so, n) in acc.items():
        print(f"{name:34s} {100 * n / n_brain:7.1f}% {st / n_brain * 1e4:6.2f} / {st / max(n, 1) * 1e4:6.1f} "
              f"{so / n_brain * 1e4:6.2f} / {so / max(n, 1) * 1e4:6.1f}")


if __name__ == "__main__":
    main(*(int(v) for v in sys.argv[1].split(":")))
