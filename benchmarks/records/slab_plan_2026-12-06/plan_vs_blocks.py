#!/usr/bin/env python
"""Slabs placed in the patient's frame and fractional slabs for 2-4 mm series, against the layout of
2026-12-06 (whole slices, k at a time, from the first slice; 3 and 4 mm series as they are).

The phantom heads of thin_slabs_2026-12-06 (1 mm slice grid, thin-slice CT noise), through the network the way
``Synthesizer.__call__`` feeds it (slabs, the nearest brain slab for slabs without brain, linear back onto the
slices), each scored on the 1 mm grid against the 1 mm true DWI:

- ``1mm_blocks``: the 1 mm series on slabs of 5 whole slices from its first (before);
- ``1mm_grid``: the same series on 5 mm slabs centred at whole multiples of 5 mm in the patient's frame
  (``preprocess.slab_plan`` with ``grid_anchor``; the phantom's first slice is taken as z = 0: now);
- ``2mm_before`` / ``3mm_before`` / ``4mm_before``: the head averaged into 2 / 3 / 4 mm slices; the 2 mm slices
  averaged two at a time into 4 mm slabs from the first, the 3 and 4 mm ones fed as they are (before);
- ``2mm_slabs`` / ``3mm_slabs`` / ``4mm_slabs``: those slices averaged into 5 mm slabs placed as ``1mm_grid``'s,
  5/2, 5/3 and 5/4 slices each (the candidates).

With ``--shift N``, the first N seeds also get the z-shift check of z_shift.py for both 1 mm layouts: the series
without its first 1-4 slices (the same slices where they were), r (brain) against the whole series' synthesis on
the slices both hold.

    python plan_vs_blocks.py MODEL FIRST:END OUT.jsonl [--shift N]     (one JSON row per phantom; resumable)
"""
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks/records/thin_slabs_2026-12-06"))
import thin_vs_slab as t  # noqa: E402

from jmmda_model import preprocess  # noqa: E402
from jmmda_model.data import slab_mask  # noqa: E402
from jmmda_model.inference import fill_slabs_without_brain  # noqa: E402
from jmmda_model.preprocess import from_slabs, slab_plan, to_slabs  # noqa: E402

SP = (1.0, 1.8, 1.8)
# the product's threshold when these rows were made: every arm here is built whatever the threshold is now (0.7,
# chosen from these rows: 3 mm slices on slabs, 4 mm as they are)
preprocess.SLAB_MAX_SLICE_FRACTION = 0.85


def on_slabs(syn, ct, brain, slice_mm, plan, logits=False):
    """The synthesis of (ct, brain) on ``plan``'s slabs (None: on its own slices), back on its slices; with
    ``logits`` (synthesis, lesion logits)."""
    if plan is None:
        y, lg, _ = syn.predict_volume(ct, brain, (slice_mm, *SP[1:]), with_logits=logits)
        return (y, lg) if logits else y
    bs = slab_mask(brain, plan)
    y, lg, _ = syn.predict_volume(to_slabs(ct, plan), bs, (slice_mm * plan.thickness, *SP[1:]), with_logits=logits)
    back = [from_slabs(fill_slabs_without_brain(a, bs), plan) for a in (y, lg) if a is not None]
    return tuple(back) if logits else back[0]


def phantoms(argv):
    """(synthesizer, output file, the --shift count, and per pending phantom: seed, index from the first, CT, brain,
    lesion, true DWI, the model's lookup-table prediction) for ``MODEL FIRST:END OUT.jsonl [--shift N]``."""
    model, out = argv[1], Path(argv[3])
    n_shift = int(argv[argv.index("--shift") + 1]) if "--shift" in argv else 0
    first = int(argv[2].split(":")[0])
    syn = t.Synthesizer(model, device="cpu")
    table = t.TissuePrior.from_dict(syn.pre.tissue_prior)

    def each():
        for seed in t.pending(argv[2], out):
            c = t.thin_case(seed, slice_multiple=1)
            ct, brain = c["ct"], c["brain"]
            prior = table.predict(ct, brain, SP, t.mirror_or_self(ct, t.estimate_midplane(ct, SP), SP))
            yield seed, seed - first, ct, brain, c["lesion"], c["dwi"], prior

    return syn, out, n_shift, each()


def main():
    syn, out, n_shift, cases = phantoms(sys.argv)
    for seed, index, ct, brain, lesion, dwi, prior in cases:
        n = ct.shape[0]
        row = {"seed": seed, "slices": n}

        def score(y):
            return t.score(y, dwi, brain, lesion, ct, SP, prior, SP)

        def layout(n_slices, cut, grid):  # the series without its first ``cut`` slices
            return slab_plan(n_slices, 1.0, 5.0, -float(cut) if grid else None)

        ys = {}
        for name, grid in (("1mm_blocks", False), ("1mm_grid", True)):
            ys[name] = on_slabs(syn, ct, brain, 1.0, layout(n, 0, grid))
            row[name] = score(ys[name])
        for mm in (2, 3, 4):
            thick = slab_plan(n, 1.0, float(mm))  # the scanner's mm-thick slices: whole 1 mm slices from the first
            ct_m, brain_m = to_slabs(ct, thick), slab_mask(brain, thick)
            # before: 2 mm slices two at a time into 4 mm slabs from the first (slab_factor 2); 3 and 4 mm as they are
            before = slab_plan(len(ct_m), 2.0, 4.0) if mm == 2 else None
            row[f"{mm}mm_before"] = score(from_slabs(on_slabs(syn, ct_m, brain_m, float(mm), before), thick))
            frac = slab_plan(len(ct_m), float(mm), 5.0, -(mm - 1) / (2.0 * mm))  # z = 0 at the first 1 mm slice
            row[f"{mm}mm_slabs"] = score(from_slabs(on_slabs(syn, ct_m, brain_m, float(mm), frac), thick))
        if index < n_shift:
            for name, grid in (("1mm_blocks", False), ("1mm_grid", True)):
                rs = []
                for s in (1, 2, 3, 4):
                    a, b = ct[s:], brain[s:]
                    m = b > 0
                    rs.append(round(float(np.corrcoef(ys[name][s:][m], on_slabs(syn, a, b, 1.0, layout(n - s, s, grid))[m])[0, 1]), 4))
                row[f"z_shift_r_{name}"] = rs
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
