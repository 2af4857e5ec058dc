"""Same head, same answer across slices: a thin series shifted by whole 1 mm slices (its first s slices left out)
puts the 5 mm slab boundaries elsewhere in the head. r (brain) of the synthesis on slabs, interpolated back, against
the unshifted one on the slices both hold; with --direct also the network on the thin slices themselves.

    python z_shift.py MODEL SEED [SEED ...] [--direct]
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import thin_vs_slab as t  # noqa: E402

args = [a for a in sys.argv[1:] if a != "--direct"]
syn = t.Synthesizer(args[0], device="cpu")
for seed in (int(s) for s in args[1:]):
    c = t.thin_case(seed)
    ct, brain = c["ct"], c["brain"]

    def run(s, direct=False):
        a, b = ct[s:], brain[s:]
        if direct:
            return syn.predict_volume(a, b, (1.0, 1.8, 1.8))[0]
        y = syn.predict_volume(t.to_slabs(a, t.blocks(len(a))), t.slab_mask(b, t.blocks(len(b))), (5.0, 1.8, 1.8))[0]
        return t.from_slabs(y, t.blocks(a.shape[0]))

    for direct in ((False, True) if "--direct" in sys.argv else (False,)):
        y0, rs = run(0, direct), []
        for s in (1, 2, 3, 4):
            m = brain[s:] > 0
            rs.append(round(float(np.corrcoef(y0[s:][m], run(s, direct)[m])[0, 1]), 3))
        print(f"seed {seed} {'thin slices' if direct else 'slabs'}: r against the unshifted synthesis for shifts of "
              f"1-4 mm: {rs}", flush=True)
