"""The pose test's head (tests/test_pose.py Scanner) at seeds given on the command line, every pose of the test,
synthesised by the shipped demo with and without flip averaging (Synthesizer.flip_average). Per seed and arm:
r(pose synthesis mapped back, centred synthesis) on the brain, and superpixel r of each scan against its own true
DWI. One JSON row per seed and arm on stdout.

    python benchmarks/records/flip_average_2026-12-06/poses.py 1 2 3 4 5 6 > poses.jsonl
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
from jmmda_model.metrics import superpixel_correlation  # noqa: E402

def spr(scan, img):
    b = sitk.GetArrayFromImage(scan["brainmask"]) > 0
    return superpixel_correlation(sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(scan["dwi"]), b,
                                  spacing=(5.0, 1.8, 1.8))[0]


def centred(syn, seed: int, **scanner):
    """The pose head of ``seed`` (tests/test_pose.py Scanner(**scanner)), its centred scan, brain, and synthesis
    (image and array)."""
    tp.SEED = seed
    sc = tp.Scanner(**scanner)
    c = sc.scan(noise_seed=0)
    co_img = syn(c["ct"], c["brainmask"])[0]
    return sc, c, sitk.GetArrayFromImage(c["brainmask"]) > 0, co_img, sitk.GetArrayFromImage(co_img)


def main(seeds):
    syn = Synthesizer(DEMO_MODEL, device="cpu")
    for seed in seeds:
        for arm in (False, True):
            syn.flip_average = arm
            sc, c, brain, co_img, co = centred(syn, seed)
            scans = {name: sc.scan(*pose) for name, pose in tp.POSES.items()}
            row = {"seed": seed, "flip_average": arm, "sp_centred": round(spr(c, co_img), 4)}
            for name, s in scans.items():
                out = syn(s["ct"], s["brainmask"])[0]
                back = tp.synthesis_on_centred_grid(out, s["brainmask"], c["ct"], sc, tp.POSES[name][2])
                m = brain & (back > 0)
                row[name] = {"r": round(float(np.corrcoef(co[m], back[m])[0, 1]), 4), "sp": round(spr(s, out), 4)}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main([int(v) for v in sys.argv[1:]])
