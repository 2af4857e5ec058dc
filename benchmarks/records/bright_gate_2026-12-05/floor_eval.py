#!/usr/bin/env python
"""A floor for hypodense brain: where the CT is a little darker than its mirror image (the tissue prior's lift zone:
mirror minus CT, both smoothed in the slice as the prior smooths them, between DELTA and LIFT HU), the synthesis is
never rendered below the (lifted) tissue prior - a hypodensity the lesion head does not flag is shown as normal
tissue, not as darker tissue. Evaluated on dumped cases (dump_cases.py + add_mirror.py), counted as rule_eval.py.

    python floor_eval.py CASEDIR          (run on the 40 tuning phantoms only: it changed nothing there)
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rule_eval import count  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from jmmda_model.prior import _smoothed  # noqa: E402


def floor(c, delta, lift):
    y = c["y"]
    if delta is None:
        return y
    gap = _smoothed(c["mirror"]) - _smoothed(c["ct"])
    zone = (c["brain"] > 0) & (gap >= delta) & (gap <= lift)
    return np.where(zone, np.maximum(y, c["prior"]), y)


def main():
    args = sys.argv[1:]
    cases = []
    for f in sorted(Path(args[0]).glob("case_*.npz")):
        c = dict(np.load(f))
        c["mirror"] = np.load(f.with_name(f.name.replace("case_", "mirror_")))["mirror"]
        cases.append(c)
    print(f"{len(cases)} cases")
    grid = [(d, L) for L in (10.0, 15.0) for d in (0.0, 1.0, 2.0, 3.0)] + [(-1000.0, 1000.0)]  # last: everywhere
    for d, L in [(None, None)] + grid:
        count(cases, lambda c: floor(c, d, L), "as the model renders" if d is None else f"floor where mirror - CT in [{d:g}, {L:g}] HU")


if __name__ == "__main__":
    main()
