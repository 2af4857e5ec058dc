#!/usr/bin/env python
"""The lesions the shipped demo renders darker than normal brain (ratio to the brain's median < 1), on a dump of
dump_cases.py: their size, CT contrast, and their synthesis, prior and true DWI against the normal brain around
them (2-4 voxel ring, rule_eval.local_ratio).        python darker_why.py CASEDIR"""
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[2]))
from rule_eval import local_ratio  # noqa: E402

from jmmda_model.metrics import lesion_metrics  # noqa: E402

rows = []
for f in sorted(Path(sys.argv[1]).glob("case_*.npz")):
    c = dict(np.load(f))
    m = lesion_metrics(c["y"], c["dwi"], c["brain"], c["lesion"], c["ct"], tuple(c["spacing"]), masks=True)
    lab = m["labels"]
    for k, x in enumerate(m["lesions"], 1):
        if x["darker"]:
            r = lab == k
            rows.append([x["volume_ml"], x.get("ct_contrast_hu", np.nan)]
                        + [local_ratio(c[key], r, c["brain"], lab > 0) for key in ("y", "prior", "dwi")])
a = np.array(rows)
q = lambda v: ", ".join(f"{t:.3f}" for t in np.nanquantile(v, [0, 0.5, 1]))  # noqa: E731
print(f"{len(a)} lesions darker than the brain's median; under 1 mL {int((a[:, 0] < 1).sum())}; CT contrast under "
      f"3 HU (or not measurable) {int((~(a[:, 1] >= 3)).sum())}")
print(f"against the ring around them (min, median, max): synthesis {q(a[:, 2])}; prior {q(a[:, 3])}; true DWI {q(a[:, 4])}")
print(f"synthesis below the ring {int((a[:, 2] < 1).sum())}; synthesis below the prior {int((a[:, 2] < a[:, 3]).sum())}")
