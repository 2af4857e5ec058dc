"""The lesions a rule of extent_rule.py hides (shown before, not after) or turns darker than normal brain.

    python lost_lesions.py DUMP_DIR E
"""
import glob
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import extent_rule as er  # noqa: E402

for f in sorted(glob.glob(str(Path(sys.argv[1]) / "case_*.npz"))):
    d = dict(np.load(f))
    y2, _ = er.apply_rule(d["y"], d["brain"], d["prior"], int(sys.argv[2]))
    kw = {"ct_hu": d["ct"], "spacing": d["spacing"]}
    a = er.metrics.lesion_metrics(d["y"], d["dwi"], d["brain"] > 0, d["lesion"], masks=True, **kw)
    b = er.metrics.lesion_metrics(y2, d["dwi"], d["brain"] > 0, d["lesion"], **kw)
    for i, (l0, l1) in enumerate(zip(a["lesions"], b["lesions"])):
        if (l0["shown"] and not l1["shown"]) or (l1["darker"] and not l0["darker"]):
            reg = a["labels"] == i + 1
            zs = np.flatnonzero(reg.any((1, 2)))
            bz = np.flatnonzero((d["brain"] > 0).any((1, 2)))
            print(f"{Path(f).stem} {'qualifying' if er.metrics.qualifying(l0) else 'other'}: {l0['volume_ml']:.2f} mL, "
                  f"CT contrast {l0['ct_contrast_hu']:.1f} HU, synthetic ratio {l0['ratio_syn']:.2f} -> {l1['ratio_syn']:.2f}, "
                  f"lesion slices {zs[0]}-{zs[-1]} (brain {bz[0]}-{bz[-1]}), max probability {d['prob'][reg].max():.2f}")
