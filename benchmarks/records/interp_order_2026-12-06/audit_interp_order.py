"""Diagnostic, not a product change: the shipped demo audited (benchmarks/lesion_audit.py, served path) with the
CT and its mirror image resampled by cubic splines (order 3) instead of linear interpolation (order 1), both where
the mirror image is sampled across the mid-sagittal plane and where the slices are turned into the canonical pose.
Linear interpolation at a fractional offset averages neighbouring voxels: it lowers the CT noise by a factor that
depends on the offset, which in a turned slice varies across the image, and it makes the noise spatially coherent.
The lesion head answers coherent asymmetry (record smooth_diff_2026-12-05), so the question is whether the
false-bright brain follows the interpolation. The model was trained on linearly interpolated crops.

    python benchmarks/records/interp_order_2026-12-06/audit_interp_order.py ORDER --seeds 30000:30060 --out runs/audit_io3
"""
import functools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))
import lesion_audit  # noqa: E402

from jmmda_model.clinical import midplane  # noqa: E402

ORDER = int(sys.argv[1])
plain_forward = midplane.CanonicalPose.forward


def forward(self, vol, order=1, cval=0.0):
    return plain_forward(self, vol, order=ORDER if order == 1 else order, cval=cval)


midplane.CanonicalPose.forward = forward
midplane.mirror_volume = functools.partial(midplane.mirror_volume, order=ORDER)
sys.exit(lesion_audit.main(sys.argv[2:]))
