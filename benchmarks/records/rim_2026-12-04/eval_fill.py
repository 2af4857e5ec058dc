"""The shipped demo through the served path on the 24 test phantoms of the learning curves, with and without the
brain's rim carried outwards before it is mapped back (``inference.fill_outside``), paired per case.

    python benchmarks/records/rim_2026-12-04/eval_fill.py runs/curves_lift/phantoms_120_12_24.pkl

(The recorded JSON also holds a third arm, in-plane output smoothing of sigma 0.7 px on top of the fill, measured
with a trial build whose setting was not kept; ``output_smoothing_no_fill_24_test_phantoms.json``: the same
smoothing without the fill, sigma 0.5 / 0.7 / 1.0 px.)"""
import json
import sys
import pickle
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))
import paired_runs as pr  # noqa: E402

import jmmda_model.inference as inf  # noqa: E402

with open(sys.argv[1], "rb") as f:
    test = pickle.load(f)[2][:24]
fill, res = inf.fill_outside, {}
for label, use_fill in (("shipped, no fill (before)", False), ("shipped + fill", True)):
    inf.fill_outside = fill if use_fill else (lambda y, b: y)
    res[label] = pr.evaluate_model(str(ROOT / "apps/ct2dwi/model/jmmda_demo.pt"), test)
inf.fill_outside = fill
rows = pr.pair_cases(res["shipped, no fill (before)"]["per_case"], res["shipped + fill"]["per_case"])
print(pr.table(rows, "before", "shipped + fill"))
json.dump({"paired_vs_before": {"shipped + fill": rows}}, sys.stdout, indent=1, default=float)
