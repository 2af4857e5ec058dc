"""How many slices the served synthesis's false-bright clusters (>= 0.5 mL) and the true lesions (>= 1 mL) span, on
dump_cases.py dumps.

    python cluster_extent.py DUMP_DIR
"""
import glob
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from jmmda_model import metrics  # noqa: E402

fz, lz, fv, lv = [], [], [], []
for f in sorted(glob.glob(str(Path(sys.argv[1]) / "case_*.npz"))):
    d = np.load(f)
    vml = float(np.prod(d["spacing"])) / 1000
    m = metrics.lesion_metrics(d["y"], d["dwi"], d["brain"], d["lesion"], ct_hu=d["ct"], spacing=d["spacing"], masks=True)
    for mask, min_ml, ext, vol in ((m["false_bright_mask"], 0.5, fz, fv), (d["lesion"] > 0, 1.0, lz, lv)):
        lab, n = ndi.label(mask, np.ones((3, 3, 3)))
        for k, sl in enumerate(ndi.find_objects(lab), 1):
            v = float((lab[sl] == k).sum()) * vml
            if v >= min_ml:
                ext.append(sl[0].stop - sl[0].start)
                vol.append(v)
print(f"false-bright clusters >= 0.5 mL: {len(fz)}; slices spanned (count from 0): {np.bincount(fz).tolist()}; "
      f"median {np.median(fv):.2f} mL")
print(f"true lesions >= 1 mL: {len(lz)}; slices spanned (count from 0): {np.bincount(lz).tolist()}; "
      f"median {np.median(lv):.2f} mL")
