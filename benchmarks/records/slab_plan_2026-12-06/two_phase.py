#!/usr/bin/env python
"""Slabs in two phases: the synthesis on the 5 mm slabs of ``grid_anchor`` (now) against the mean of that and the
synthesis on slabs shifted by half a slab (a half-overlapping layout: twice the network time), both back on the
1 mm slices. The thin phantoms of thin_slabs_2026-12-06, scored as plan_vs_blocks.py. With --shift N, the first N
phantoms also get a sub-slab shift: the same head drawn with its slices 1-4 mm further along z relative to the slab
layout (the anchor moved by -s slices: what a head moved between two scans meets), r (brain) against the unmoved.
Also the probability map of each arm (the mean lesion logit; ``metrics.probability_metrics``, as
thin_slabs_2026-12-06/prob_thin_vs_slab.py).

    python two_phase.py MODEL FIRST:END OUT.jsonl [--shift N]
"""
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import plan_vs_blocks as p  # noqa: E402

t = p.t


def synth(syn, ct, brain, anchor, phases, logits=False):
    """The mean synthesis (and lesion logit) over ``phases`` slab layouts 5 / phases mm apart, back on the slices."""
    outs = [p.on_slabs(syn, ct, brain, 1.0, p.slab_plan(len(ct), 1.0, 5.0, anchor + 5.0 * k / phases), logits)
            for k in range(phases)]
    if logits:
        return np.mean([o[0] for o in outs], axis=0), np.mean([o[1] for o in outs], axis=0)
    return np.mean(outs, axis=0)


def main():
    syn, out, n_shift, cases = p.phantoms(sys.argv)
    for seed, index, ct, brain, lesion, dwi, prior in cases:
        row = {"seed": seed, "slices": len(ct)}
        ys = {}
        for phases in (1, 2):
            ys[phases], lg = synth(syn, ct, brain, 0.0, phases, logits=True)
            row[f"phases_{phases}"] = t.score(ys[phases], dwi, brain, lesion, ct, p.SP, prior, p.SP)
            counted = [t.metrics.qualifying(L) for L in t.metrics.lesion_metrics(
                ys[phases], dwi, brain, lesion, ct_hu=ct, spacing=p.SP)["lesions"]]
            row[f"prob_{phases}"] = t.metrics.probability_metrics(syn.probability(lg) * (brain > 0), lesion, brain,
                                                                 p.SP, counted=counted)
        if index < n_shift:
            m = brain > 0
            for phases in (1, 2):
                row[f"slab_shift_r_{phases}"] = [
                    round(float(np.corrcoef(ys[phases][m], synth(syn, ct, brain, -float(s), phases)[m])[0, 1]), 4)
                    for s in (1, 2, 3, 4)]
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
