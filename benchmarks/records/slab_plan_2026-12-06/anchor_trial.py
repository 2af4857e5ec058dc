#!/usr/bin/env python
"""Where to anchor the slabs (measurement behind ``preprocess.grid_anchor``). The pose test's head (seed 1) scanned
into 1 mm slices, centred and shifted 7 mm in plane (thin_tilt.scan, tests/test_pose.py POSES), each through the
served path with its slab layout anchored four ways; r (brain) of the shifted synthesis mapped back against the
centred one:

- ``first``: whole slices from the first slice of the series (the layout before this record);
- ``brain``: the middle of the brain's half-maximum extent along z, exactly (tried, not taken);
- ``brain_rounded``: the same rounded to a whole slice (tried, not taken);
- ``grid``: whole multiples of 5 mm in the patient's frame (``grid_anchor``: now).

    python anchor_trial.py [SEED]
"""
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
import thin_tilt as tt  # noqa: E402

import jmmda_model.inference as inference  # noqa: E402
from jmmda_model.preprocess import grid_anchor  # noqa: E402


def brain_anchor(brain, rounded):
    area = brain.reshape(len(brain), -1).sum(1).astype(np.float64)
    half = area.max() / 2.0
    above = np.flatnonzero(area >= half)
    lo, hi = int(above[0]), int(above[-1])
    start = lo + (-1) * (area[lo] - half) / (area[lo] - area[lo - 1]) if lo > 0 else float(lo)
    end = hi + (area[hi] - half) / (area[hi] - area[hi + 1]) if hi < len(area) - 1 else float(hi)
    mid = (start + end) / 2.0
    return float(np.floor(mid + 0.5)) if rounded else mid


def main():
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    tt.tp.SEED = seed
    sc = tt.tp.Scanner()
    c = tt.scan(sc, 1)
    # shifted 7 mm in x: the pose test's "shifted 7 mm", scanned into 1 mm slices (one plane each)
    shifted = {}
    for k, img in c.items():
        o = sitk.Image(img)
        o.SetOrigin(tuple(np.array(img.GetOrigin()) + np.array([7.0, 0.0, 0.0])))
        shifted[k] = sitk.Resample(sc.fine[k], o, sitk.Transform(), sitk.sitkLinear, -1024.0 if k == "ct" else 0.0,
                                   sitk.sitkFloat32)
        if k == "brainmask":
            shifted[k] = sitk.Cast(shifted[k] > 0.5, sitk.sitkUInt8)
        elif k == "ct":
            shifted[k] = sitk.Cast(sitk.Round(shifted[k]), sitk.sitkInt16)
    syn = inference.Synthesizer(tt.DEMO_MODEL, device="cpu")
    orig_plan = inference.slab_plan
    for arm in ("first", "brain", "brain_rounded", "grid"):
        anchors = []

        def plan(n, slice_mm, slab_mm, anchor, arm=arm):
            a = {"first": None, "grid": anchor}.get(arm)
            if arm.startswith("brain"):
                a = brain_anchor(current["brain"], arm == "brain_rounded")
            anchors.append(None if a is None else round(a, 3))
            return orig_plan(n, slice_mm, slab_mm, a)

        inference.slab_plan = plan
        out = {}
        for name, s in (("centred", c), ("shifted", shifted)):
            current = {"brain": sitk.GetArrayFromImage(s["brainmask"])}
            out[name] = syn(s["ct"], s["brainmask"])[0]
        back = tt.tp.synthesis_on_centred_grid(out["shifted"], shifted["brainmask"], c["ct"], sc, 0.0)
        brain = sitk.GetArrayFromImage(c["brainmask"]) > 0
        m = brain & (back > 0)
        r = float(np.corrcoef(sitk.GetArrayFromImage(out["centred"])[m], back[m])[0, 1])
        print(f"seed {seed} anchor {arm}: slab anchors (centred, shifted) {anchors}; r(shifted, centred) {r:.3f}", flush=True)
    inference.slab_plan = orig_plan
    print(f"grid_anchor of the centred scan: {grid_anchor(c['ct']):.3f}")


if __name__ == "__main__":
    main()
