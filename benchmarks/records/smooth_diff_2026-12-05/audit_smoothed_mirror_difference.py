"""Diagnostic, not a product change: the shipped demo audited (benchmarks/lesion_audit.py, served path) with its
CT-minus-mirror difference smoothed in the slice before the network sees it - the mirrored CT handed to the model is
replaced by CT - gaussian(CT - mirror, sigma). The model was trained on the unsmoothed difference, so this only asks
whether the false-bright brain follows the noise in that difference.

    python benchmarks/records/smooth_diff_2026-12-05/audit_smoothed_mirror_difference.py SIGMA_PX --seeds 30000:30040 --out runs/audit_sd
"""
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))
import lesion_audit  # noqa: E402

import jmmda_model.data as data  # noqa: E402

SIGMA = float(sys.argv[1])
plain = data.mirror_or_self


def smoothed(ct_hu, plane, spacing_zyx):
    m = plain(ct_hu, plane, spacing_zyx)
    ct = np.asarray(ct_hu, np.float32)
    return (ct - ndi.gaussian_filter(ct - m, (0.0, SIGMA, SIGMA))).astype(np.float32)


data.mirror_or_self = smoothed
sys.exit(lesion_audit.main(sys.argv[2:]))
