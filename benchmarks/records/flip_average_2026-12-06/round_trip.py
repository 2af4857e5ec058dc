"""How much the pose test's own mapping back costs: the centred synthesis resampled onto each pose's grid and back
onto the centred grid (the same two linear interpolations, as masked data, that a pose's synthesis goes through in
tests/test_pose.py), against itself. Per seed (the pose test's scanner), r(round trip, centred synthesis) on the
brain for every pose; the shipped demo as served (one view). One JSON row per seed.

    python benchmarks/records/flip_average_2026-12-06/round_trip.py 1 2 3 4 5 6 > round_trip.jsonl
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import test_pose as tp  # noqa: E402
from conftest import DEMO_MODEL  # noqa: E402

from jmmda_model.inference import Synthesizer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from poses import centred  # noqa: E402

syn = Synthesizer(DEMO_MODEL, device="cpu")
for seed in [int(v) for v in sys.argv[1:]]:
    sc, c, brain, co_img, co = centred(syn, seed)
    row = {"seed": seed}
    for name, (rot, shift, head) in tp.POSES.items():
        s = sc.scan(rot, shift, head)
        tf = sc.turn(head) if head else sitk.Transform()  # the pose grid's points -> the centred head's frame
        there = sitk.Resample(co_img, s["ct"], tf, sitk.sitkLinear, 0.0, sitk.sitkFloat32)  # onto the pose grid
        w = sitk.Resample(sitk.Cast(c["brainmask"], sitk.sitkFloat32), s["ct"], tf, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        there = sitk.GetImageFromArray(np.where(sitk.GetArrayFromImage(w) > 0.5, sitk.GetArrayFromImage(there)
                                                / np.maximum(sitk.GetArrayFromImage(w), 1e-6), 0).astype(np.float32))
        there.CopyInformation(s["ct"])
        back = tp.synthesis_on_centred_grid(there, s["brainmask"], c["ct"], sc, head)
        m = brain & (back > 0)
        row[name] = round(float(np.corrcoef(co[m], back[m])[0, 1]), 4)
    print(json.dumps(row), flush=True)
