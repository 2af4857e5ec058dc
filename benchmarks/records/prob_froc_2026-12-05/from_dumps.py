#!/usr/bin/env python
"""The shipped demo's infarct-probability map, lesion-wise, on the audit's 120 test phantoms (#18's target:
sensitivity >= 85 % at <= 2 false-positive clusters of >= 0.5 mL per case, ECE <= 0.05), from the served-path dumps
of record bright_gate_2026-12-05 (``dump_cases.py``: synthesis, calibrated probability, brain, lesion, true DWI,
CT per case) instead of running the network again. The figures are ``lesion_audit.probability_summary``'s, the
lesions counted by ``lesion_metrics`` / ``qualifying`` as the audit counts them (checked below against the audit's
own count of shown qualifying lesions).

    python from_dumps.py DUMP_DIR [OUT.json] > from_dumps.txt      (DUMP_DIR: runs/gate_test, seeds 30000-30119;
                                                                     OUT.json: the summary and the FROC, kept)
"""
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import lesion_audit as la  # noqa: E402

from jmmda_model.metrics import lesion_metrics, probability_metrics, qualifying  # noqa: E402

cases, shown, n_q = [], 0, 0
files = sorted(Path(sys.argv[1]).glob("case_*.npz"), key=lambda f: int(f.stem.split("_")[1]))
for f in files:
    d = np.load(f)
    sp = tuple(float(v) for v in d["spacing"])
    les = lesion_metrics(d["y"], d["dwi"], d["brain"], d["lesion"], d["ct"], sp)["lesions"]
    q = [qualifying(x) for x in les]
    shown += sum(x["shown"] for x, k in zip(les, q) if k)
    n_q += sum(q)
    cases.append({"probability": probability_metrics(d["prob"], d["lesion"], d["brain"], sp, counted=q)})
s = la.probability_summary(cases)
print(f"{len(files)} cases ({files[0].stem}..{files[-1].stem}); qualifying lesions {n_q}, shown {shown} "
      "(the audit of record audit_demo_candidate_2026-12-05: 54 of 65)")
print(la.probability_lines(s)[0])
for key in ("qualifying", "all"):
    print(key, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in s[key].items()})
print("FROC, the issue's lesions (threshold: sensitivity, FP clusters per case):")
from jmmda_model.metrics import froc_curve  # noqa: E402

curve = froc_curve([c["probability"] for c in cases], counted_only=True)
for r in curve:
    print(f"  {r['threshold']:.2f}: {r['sensitivity']:.3f}, {r['fp_per_case']:.2f}")
if len(sys.argv) > 2:
    import json

    Path(sys.argv[2]).write_text(json.dumps({"cases": len(files), "first": files[0].stem, "last": files[-1].stem,
                                             "summary": s, "froc_qualifying": curve,
                                             "froc_all": froc_curve([c["probability"] for c in cases])}, indent=1))
