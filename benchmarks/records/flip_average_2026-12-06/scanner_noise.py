"""The pose test's head scanned as a scanner would: drawn without CT noise, every scan adding noise of its own on its
own grid (tests/test_pose.py Scanner(scanner_noise=True)), so a posed scan's noise is not an interpolation of the
centred scan's. Per seed: r(pose synthesis mapped back, centred synthesis) on the brain and superpixel r against the
pose's own true DWI, for a second centred scan (fresh noise only: the floor two scanner visits allow), every pose of
the test, and the off-centre pose at whole pixels (59.4 / 14.4 mm = 33 / 8 pixels). The shipped demo as served
(one view per slice, the default). One JSON row per seed.

    python benchmarks/records/flip_average_2026-12-06/scanner_noise.py 1 2 3 4 5 6 [--flip-average] > scanner_noise.jsonl
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import numpy as np  # noqa: E402
import test_pose as tp  # noqa: E402
from conftest import DEMO_MODEL  # noqa: E402

from jmmda_model.inference import Synthesizer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from poses import centred, spr  # noqa: E402

FLIP = "--flip-average" in sys.argv  # each slice averaged with its mirror image (jmmda infer --flip-average)
syn = Synthesizer(DEMO_MODEL, device="cpu", flip_average=FLIP)
POSES = {"centred again (fresh noise)": (np.eye(3), (0.0, 0.0, 0.0), 0.0), **tp.POSES,
         "off-centre 59.4/14.4 mm (whole pixels)": (np.eye(3), (59.4, 14.4, 0.0), 0.0)}


for seed in [int(v) for v in sys.argv[1:] if v != "--flip-average"]:
    sc, c, brain, co_img, co = centred(syn, seed, scanner_noise=True)
    row = {"seed": seed, "flip_average": FLIP, "noise_hu": sc.noise_hu, "sp_centred": round(spr(c, co_img), 4)}
    for i, (name, (rot, shift, head)) in enumerate(POSES.items(), start=1):
        s = sc.scan(rot, shift, head, noise_seed=i)
        out = syn(s["ct"], s["brainmask"])[0]
        back = tp.synthesis_on_centred_grid(out, s["brainmask"], c["ct"], sc, head)
        m = brain & (back > 0)
        row[name] = {"r": round(float(np.corrcoef(co[m], back[m])[0, 1]), 4), "sp": round(spr(s, out), 4)}
    print(json.dumps(row), flush=True)
