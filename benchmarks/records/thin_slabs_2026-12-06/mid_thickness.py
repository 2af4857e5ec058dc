#!/usr/bin/env python
"""Slices between the thin ones and the model's 5 mm: the same 1 mm phantom heads as thin_vs_slab.py averaged into
3 mm and 4 mm slices (what a scanner's 3 or 4 mm reconstruction holds; slab_factor leaves those as they are) and fed
to the network as they are, beside the 5 mm slabs; each interpolated back onto the 1 mm grid and scored there.

    python mid_thickness.py MODEL FIRST:END OUT.jsonl
"""
import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import thin_vs_slab as t  # noqa: E402


def main():
    model, out = sys.argv[1], Path(sys.argv[3])
    syn = t.Synthesizer(model, device="cpu")
    table = t.TissuePrior.from_dict(syn.pre.tissue_prior)
    sp = (1.0, 1.8, 1.8)
    for seed in t.pending(sys.argv[2], out):
        c = t.thin_case(seed, slice_multiple=1)  # a last, partial slice averages what is left (preprocess.to_slabs)
        ct, brain, lesion, dwi = c["ct"], c["brain"], c["lesion"], c["dwi"]
        n = ct.shape[0]
        prior = table.predict(ct, brain, sp, t.mirror_or_self(ct, t.estimate_midplane(ct, sp), sp))
        row = {"seed": seed, "slices": n}
        for k in (3, 4, 5):
            y = syn.predict_volume(t.to_slabs(ct, t.blocks(len(ct), k)), t.slab_mask(brain, t.blocks(len(brain), k)), (float(k), 1.8, 1.8))[0]
            row[f"{k}mm"] = t.score(t.from_slabs(y, t.blocks(n, k)), dwi, brain, lesion, ct, sp, prior, sp)
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
