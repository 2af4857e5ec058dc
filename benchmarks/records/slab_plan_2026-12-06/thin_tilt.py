#!/usr/bin/env python
"""A thin (K mm) series with a 15 degree gantry tilt: the synthesis on slabs along the tilted slices (``direct``:
the product until now, ``geometry.reslice_axial`` switched off) against the served path, which re-slices thin tilted
series onto the patient's axial plane at their own slice spacing first (the slabs then lie as an untilted series'
would) and resamples the result back onto the tilted slices (``served``; ``axial``: the first prototype of that,
the CT re-sliced by this script into int16 before the served path). The head of
tests/test_pose.py (Scanner, seeds via --seeds), scanned into K mm slices along the grid's own normal (as
tilt_2026-12-05/slab_thickness.py); r (brain) against the untilted scan's synthesis on the untilted grid, and each
scan's superpixel r against its own true DWI.

    python thin_tilt.py K [--seeds 1,2,3] [--model M] [--arms direct,axial]
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import test_pose as tp  # noqa: E402
from conftest import DEMO_MODEL  # noqa: E402

import jmmda_model.inference as inference  # noqa: E402
from jmmda_model.clinical.geometry import reslice_axial  # noqa: E402
from jmmda_model.inference import Synthesizer  # noqa: E402
from jmmda_model.metrics import superpixel_correlation  # noqa: E402


def scan(scanner, K, rotation=np.eye(3), size=(176, 176, 30)):
    """The head scanned into K mm slices (K planes of the 1 mm grid each) over the pose test's 150 mm."""
    d = np.diag([-1.0, -1.0, 1.0]) @ rotation
    sp = np.array([1.8, 1.8, 1.0])
    n = np.array([size[0], size[1], size[2] * 5])
    origin = scanner.centre - d @ ((n - 1) / 2 * sp)
    out = {}
    for k, img in scanner.fine.items():
        r = sitk.Resample(img, [int(v) for v in n], sitk.Transform(), sitk.sitkLinear, tuple(origin), tuple(sp),
                          tuple(d.ravel()), -1024.0 if k == "ct" else 0.0, sitk.sitkFloat32)
        a = sitk.GetArrayFromImage(r).reshape(n[2] // K, K, size[1], size[0]).mean(1)
        a = (a > 0.5).astype(np.uint8) if k == "brainmask" else (np.round(a).astype(np.int16) if k == "ct" else a)
        o = sitk.GetImageFromArray(a)
        o.SetSpacing((1.8, 1.8, float(K)))
        o.SetDirection(tuple(d.ravel()))
        o.SetOrigin(tuple(origin + d @ np.array([0.0, 0.0, (K - 1) / 2])))
        out[k] = o
    return out


def axial_grid(img):
    """An axial (LPS) grid over ``img``'s physical extent at its own spacing."""
    size, sp = np.array(img.GetSize()), np.array(img.GetSpacing())
    corners = np.array([img.TransformContinuousIndexToPhysicalPoint([float(v) for v in (i, j, k)])
                        for i in (-0.5, size[0] - 0.5) for j in (-0.5, size[1] - 0.5) for k in (-0.5, size[2] - 0.5)])
    lo, hi = corners.min(0), corners.max(0)
    n = np.ceil((hi - lo) / sp).astype(int)
    ref = sitk.Image([int(v) for v in n], sitk.sitkUInt8)
    ref.SetSpacing(tuple(sp))
    ref.SetOrigin(tuple(lo + sp / 2))
    return ref


def synth_axial(syn, ct, mask):
    ref = axial_grid(ct)
    ct_a = sitk.Cast(sitk.Resample(ct, ref, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32), sitk.sitkInt16)
    m_a = sitk.Resample(mask, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    y = syn(ct_a, m_a)[0]
    return tp.synthesis_on_centred_grid(y, m_a, ct, _Id(), 0.0), ref  # back onto the tilted slices, masked data


class _Id:  # synthesis_on_centred_grid's scanner argument, for no head turn
    def turn(self, deg):
        return sitk.Transform()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("K", type=int)
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--model", default=str(DEMO_MODEL))
    ap.add_argument("--arms", default="direct,served")
    a = ap.parse_args()
    syn = Synthesizer(a.model, device="cpu")
    for seed in (int(s) for s in a.seeds.split(",")):
        tp.SEED = seed
        sc = tp.Scanner()
        rot = tp.POSES["tilted 15 deg"][0]
        c, t = scan(sc, a.K), scan(sc, a.K, rot)
        brain = sitk.GetArrayFromImage(c["brainmask"]) > 0
        row = {"seed": seed, "K_mm": a.K}
        for arm in a.arms.split(","):
            if arm in ("direct", "served"):
                inference.reslice_axial = (lambda img, label=False: img) if arm == "direct" else reslice_axial
                yc, yt = syn(c["ct"], c["brainmask"])[0], syn(t["ct"], t["brainmask"])[0]
                pc = sitk.GetArrayFromImage(yc)
                back = tp.synthesis_on_centred_grid(yt, t["brainmask"], c["ct"], sc, 0.0)
                yt_arr = sitk.GetArrayFromImage(yt)
            else:
                pc = synth_axial(syn, c["ct"], c["brainmask"])[0]
                yt_arr = synth_axial(syn, t["ct"], t["brainmask"])[0]
                yt_img = sitk.GetImageFromArray(yt_arr)
                yt_img.CopyInformation(t["ct"])
                back = tp.synthesis_on_centred_grid(yt_img, t["brainmask"], c["ct"], sc, 0.0)
            m = brain & (back > 0)
            bt = sitk.GetArrayFromImage(t["brainmask"]) > 0
            sp_c = superpixel_correlation(pc, sitk.GetArrayFromImage(c["dwi"]), brain, spacing=(a.K, 1.8, 1.8))[0]
            sp_t = superpixel_correlation(yt_arr, sitk.GetArrayFromImage(t["dwi"]), bt, spacing=(a.K, 1.8, 1.8))[0]
            row[arm] = {"r_tilted_vs_centred": round(float(np.corrcoef(pc[m], back[m])[0, 1]), 4),
                        "superpixel_centred": round(float(sp_c), 4), "superpixel_tilted": round(float(sp_t), 4)}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
