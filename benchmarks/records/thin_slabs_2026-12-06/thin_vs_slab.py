#!/usr/bin/env python
"""Thin-slice CT: the network on the thin slices themselves (what `jmmda infer` did) against the same CT averaged
into slabs of the model's training thickness first (5 mm) and the result interpolated back. Measurement only.

A phantom head is drawn on a 1.8 x 1.8 x 1 mm grid without CT noise (PhantomConfig(spacing=..., ct_noise=False):
the same anatomy, lesions and DWI), then noise of the phantoms' own texture is added per 1 mm slice at the level
that leaves the case's own 5 mm noise (``ct_noise_hu``) in a 5-slice average: thin slices are noisier than thick
ones, as on a scanner. Scored against the phantom's true DWI on the 1 mm grid and, averaged, on the 5 mm slabs.

    python thin_vs_slab.py MODEL FIRST:END OUT.jsonl      (one JSON row per phantom; resumable)
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from jmmda_model import metrics  # noqa: E402
from jmmda_model.clinical.midplane import estimate_midplane, mirror_or_self  # noqa: E402
from jmmda_model.data import slab_mask  # noqa: E402
from jmmda_model.inference import Synthesizer  # noqa: E402
from jmmda_model.phantom import PhantomConfig, loaded_case  # noqa: E402
from jmmda_model.preprocess import PreprocessConfig, from_slabs, slab_plan, to_slabs  # noqa: E402
from jmmda_model.prior import TissuePrior  # noqa: E402

K = 5  # 1 mm slices per 5 mm slab


def blocks(n: int, k: int = K):
    """The slabs of this record: k whole 1 mm slices at a time from the first (``preprocess.slab_plan`` without an
    anchor; the product now centres them on the brain, record slab_plan_2026-12-06)."""
    return slab_plan(n, 1.0, float(k))
THIN = PhantomConfig(spacing=(1.8, 1.8, 1.0), ct_noise=False)


def thin_noise(seed, shape, noise_hu):
    rng = np.random.default_rng(seed + 7_000_000)
    ref = ndi.gaussian_filter(np.random.default_rng(1).standard_normal((40, 64, 64)).astype(np.float32), 0.7)
    sigma5 = noise_hu * 2.2 * float(ref[4:-4, 4:-4, 4:-4].std())  # the 5 mm phantoms' noise (generator's scale)
    g = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 0.7)
    return g * (sigma5 / float(to_slabs(g[: g.shape[0] // K * K], blocks(g.shape[0] // K * K)).std()))


def thin_case(seed, slice_multiple: int = K):
    """The phantom head ``seed`` on the 1 mm grid with its thin-slice CT noise: (case arrays cut to a multiple of
    ``slice_multiple`` slices as a dict with ct, brain, lesion, dwi, and the case's meta)."""
    pre = PreprocessConfig.from_dict({**PreprocessConfig().to_dict(), "mirror_channels": False})
    lc = loaded_case(seed, pre, THIN)
    n = lc.ct_hu.shape[0] // slice_multiple * slice_multiple
    ct = np.clip(np.round(lc.ct_hu[:n] + thin_noise(seed, lc.ct_hu[:n].shape, lc.meta["ct_noise_hu"])), -1024, 3071)
    return {"ct": ct.astype(np.float32), "brain": lc.brain[:n], "lesion": lc.lesion[:n], "dwi": lc.dwi[:n],
            "meta": lc.meta}


def pending(seeds: str, out: Path) -> list[int]:
    """The seeds of FIRST:END not yet in the JSON-lines file ``out`` (the scripts here resume)."""
    a, b = (int(v) for v in seeds.split(":"))
    done = {json.loads(line)["seed"] for line in out.read_text().splitlines()} if out.exists() else set()
    return [s for s in range(a, b) if s not in done]


def score(y, dwi, brain, lesion, ct, spacing, prior, sp_spacing):
    b = brain > 0
    m = metrics.lesion_metrics(y, dwi, b, lesion, ct_hu=ct, spacing=spacing)
    q = [L for L in m["lesions"] if metrics.qualifying(L)]
    return {"psnr_brain": round(metrics.psnr(y * b, dwi * b, b), 3),
            "table_psnr_brain": round(metrics.psnr(prior * b, dwi * b, b), 3),
            "false_bright_ml": round(m["false_bright_ml"], 2),
            "qualifying": len(q), "qualifying_shown": sum(L["shown"] for L in q),
            "qualifying_darker": sum(L["darker"] for L in q),
            "lesions": len(m["lesions"]), "darker": sum(L["darker"] for L in m["lesions"]),
            "superpixel_r": round(metrics.superpixel_correlation(y, dwi, b, spacing=sp_spacing)[0], 4)}


def main():
    model, out = sys.argv[1], Path(sys.argv[3])
    syn = Synthesizer(model, device="cpu")
    table = TissuePrior.from_dict(syn.pre.tissue_prior)
    for seed in pending(sys.argv[2], out):
        c = thin_case(seed)
        ct, brain, lesion, dwi = c["ct"], c["brain"], c["lesion"], c["dwi"]
        n = ct.shape[0]
        sp_thin = (1.0, 1.8, 1.8)
        sp_slab = (5.0, 1.8, 1.8)
        t = time.time()
        y_thin, _, _ = syn.predict_volume(ct, brain, sp_thin)
        t_thin = time.time() - t
        ct_s, brain_s = to_slabs(ct, blocks(n)), slab_mask(brain, blocks(n))
        t = time.time()
        y_s, _, _ = syn.predict_volume(ct_s, brain_s, sp_slab)
        t_slab = time.time() - t
        y_back = from_slabs(y_s, blocks(n))
        row = {"seed": seed, "ct_noise_hu": c["meta"]["ct_noise_hu"], "slices": n,
               "net_s": {"thin": round(t_thin, 1), "slabs": round(t_slab, 1)}}
        prior_thin = table.predict(ct, brain, sp_thin, mirror_or_self(ct, estimate_midplane(ct, sp_thin), sp_thin))
        prior_s = table.predict(ct_s, brain_s, sp_slab, mirror_or_self(ct_s, estimate_midplane(ct_s, sp_slab), sp_slab))
        # on the 1 mm grid, against the 1 mm true DWI
        row["thin_grid"] = {"direct": score(y_thin, dwi, brain, lesion, ct, sp_thin, prior_thin, sp_thin),
                            "slabs": score(y_back, dwi, brain, lesion, ct, sp_thin, prior_thin, sp_thin)}
        # on the 5 mm slabs, against the true DWI averaged the same way
        dwi_s, les_s = to_slabs(dwi, blocks(n)), (to_slabs(lesion, blocks(n)) > 0.5).astype(np.uint8)
        row["slab_grid"] = {"direct": score(to_slabs(y_thin, blocks(n)), dwi_s, brain_s, les_s, ct_s, sp_slab, prior_s, sp_slab),
                            "slabs": score(y_s, dwi_s, brain_s, les_s, ct_s, sp_slab, prior_s, sp_slab)}
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
