#!/usr/bin/env python
"""Why do poses disagree? The pose test's head (``tests/test_pose.py``) scanned centred and in five poses, synthesised
with a model as served, and compared with the centred synthesis (r on the brain, mapped back), under inference-side
variants (and each pose's superpixel r against its own true DWI); and the centred CT perturbed by fresh noise
or by the smoothing of sub-pixel interpolation.

    python benchmarks/pose_probe.py [--model M] [--variants base,cubic,blur0.5,blur0.8,mirrorblur1,nomirror] [--noise]
                                    [--lowpass 0.7,1.5,3] [--per-slice 'tilted 15 deg']

Each pose's synthesis is mapped back to the centred grid as the pose test does (as masked data).

Variants (inference only, the model unchanged): ``cubic`` resamples CT and mirror into the canonical pose with cubic
splines instead of linearly; ``blurS`` blurs the canvas CT and mirror in plane (Gaussian, S pixels); ``mirrorblurS``
blurs only the CT-minus-mirror difference; ``nomirror`` switches the hemispheric comparison off. ``--noise``: the
centred CT with white noise of 0.5 / 1 / 2 HU, and smoothed as linear interpolation at phase 0.33 and 0.5 does.
Recorded in benchmarks/RESULTS.md (2026-12-04).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def _variant(name: str):
    """(canvas interpolation order for the CT and mirror, canvas blur, mirror-difference blur, mirror off)."""
    if name == "base":
        return 1, 0.0, 0.0, False
    if name == "cubic":
        return 3, 0.0, 0.0, False
    if name == "nomirror":
        return 1, 0.0, 0.0, True
    if name.startswith("mirrorblur"):
        return 1, 0.0, float(name[len("mirrorblur"):]), False
    if name.startswith("blur"):
        return 1, float(name[len("blur"):]), 0.0, False
    raise SystemExit(f"unknown variant {name!r}")


def _superpixel_r(scan: dict, synthetic: sitk.Image) -> float:
    """As the pose test: superpixel gray-level r of a pose's synthesis against that pose's own true DWI."""
    from jmmda_model.metrics import superpixel_correlation

    b = sitk.GetArrayFromImage(scan["brainmask"]) > 0
    return superpixel_correlation(sitk.GetArrayFromImage(synthetic), sitk.GetArrayFromImage(scan["dwi"]), b,
                                  spacing=(5.0, 1.8, 1.8))[0]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "apps/ct2dwi/model/jmmda_demo.pt"))
    p.add_argument("--variants", default="base")
    p.add_argument("--noise", action="store_true", help="also perturb the centred CT (noise, interpolation smoothing)")
    p.add_argument("--per-slice", default="", metavar="POSE",
                   help="also r per centred slice for this pose (e.g. 'tilted 15 deg'), beside the true DWI's")
    p.add_argument("--lowpass", default="", help="also r after an in-plane Gaussian low-pass of both syntheses, "
                   "sigma in pixels, comma-separated (how much of the disagreement is fine texture)")
    a = p.parse_args(argv)
    from test_pose import POSES, Scanner, _on_centred_grid, synthesis_on_centred_grid

    if a.per_slice and a.per_slice not in POSES:
        p.error(f"--per-slice: unknown pose {a.per_slice!r}; poses: {', '.join(POSES)}")

    from jmmda_model.clinical import midplane
    from jmmda_model.inference import Synthesizer

    scanner = Scanner()
    scans = {"centred": scanner.scan(), **{k: scanner.scan(*v) for k, v in POSES.items()}}
    syn = Synthesizer(a.model, device="cpu")
    forward, streamed = midplane.CanonicalPose.forward, Synthesizer.predict_streamed
    c = scans["centred"]
    brain = sitk.GetArrayFromImage(c["brainmask"]) > 0

    def r(x, y, both: bool = True):
        """On the brain where ``y`` (and, with ``both``, ``x``) was synthesised; the pose test uses y alone."""
        m = brain & (y > 0) & ((x > 0) if both else True)
        return float(np.corrcoef(x[m], y[m])[0, 1])

    try:
        for name in a.variants.split(","):
            canvas_order, blur, mblur, nomirror = _variant(name)

            def fwd(self, vol, order=1, cval=0.0, _o=canvas_order):  # CT and mirror: the volumes padded with -1000 HU
                return forward(self, vol, _o if cval == -1000.0 else order, cval)

            def stream(self, ct, b, sp, mirror=None, _b=blur, _m=mblur, _n=nomirror, **kw):
                if _b:
                    ct = ndi.gaussian_filter(ct, (0, _b, _b))
                    mirror = None if mirror is None else ndi.gaussian_filter(mirror, (0, _b, _b))
                if _n and mirror is not None:
                    mirror = ct
                if _m and mirror is not None:
                    mirror = ct + ndi.gaussian_filter(mirror - ct, (0, _m, _m))
                return streamed(self, ct, b, sp, mirror, **kw)

            midplane.CanonicalPose.forward = fwd
            Synthesizer.predict_streamed = stream
            t = time.time()
            outs = {k: syn(s["ct"], s["brainmask"])[0] for k, s in scans.items()}
            ref = sitk.GetArrayFromImage(outs["centred"])
            back = {k: synthesis_on_centred_grid(outs[k], scans[k]["brainmask"], c["ct"], scanner, POSES[k][2])
                    for k in POSES}
            row = [f"{k}: {r(ref, back[k], both=False):.3f}" for k in POSES]
            print(f"{name}: " + " | ".join(row) + f" ({time.time() - t:.0f} s)", flush=True)
            for sg in [float(v) for v in a.lowpass.split(",") if v]:
                lp = lambda v, _s=sg: ndi.gaussian_filter(v, (0, _s, _s))  # noqa: E731
                row = [f"{k}: {r(lp(ref), lp(back[k]), both=False):.3f}" for k in POSES]
                print(f"{name}, both low-passed (sigma {sg:g} px): " + " | ".join(row), flush=True)
            if a.per_slice:
                k = a.per_slice
                truth = sitk.GetArrayFromImage(c["dwi"])
                true_back = _on_centred_grid(scans[k]["dwi"], c["ct"], scanner, POSES[k][2])
                for z in range(ref.shape[0]):
                    m = brain[z] & (back[k][z] > 0)
                    if m.sum() >= 200:
                        print(f"{name}, {k}, centred slice {z} ({m.sum()} px): r {np.corrcoef(ref[z][m], back[k][z][m])[0, 1]:.3f}"
                              f" (true DWI {np.corrcoef(truth[z][m], true_back[z][m])[0, 1]:.3f}); r vs the true DWI: "
                              f"centred {np.corrcoef(ref[z][m], truth[z][m])[0, 1]:.3f}, pose "
                              f"{np.corrcoef(back[k][z][m], truth[z][m])[0, 1]:.3f}", flush=True)
            sp = [f"{k}: {_superpixel_r(s, outs[k]):.3f}" for k, s in scans.items()]
            print(f"{name}: superpixel r vs each pose's own true DWI - " + " | ".join(sp), flush=True)
    finally:
        midplane.CanonicalPose.forward, Synthesizer.predict_streamed = forward, streamed
    if a.noise:
        base = sitk.GetArrayFromImage(syn(c["ct"], c["brainmask"])[0])
        ct = sitk.GetArrayFromImage(c["ct"]).astype(np.float32)
        rng = np.random.default_rng(0)

        def run(arr):
            img = sitk.GetImageFromArray(np.round(arr).astype(np.int16))
            img.CopyInformation(c["ct"])
            return sitk.GetArrayFromImage(syn(img, c["brainmask"])[0])

        for sd in (0.5, 1.0, 2.0):
            print(f"white noise {sd} HU: r {r(base, run(ct + rng.normal(0, sd, ct.shape))):.3f}", flush=True)
        # a symmetric kernel with the noise reduction of linear interpolation at that sub-pixel phase
        for phase, w in ((0.33, 0.14), (0.5, 0.25)):
            k = np.array([w, 1 - 2 * w, w])
            smooth = ndi.convolve1d(ndi.convolve1d(ct, k, axis=2), k, axis=1)
            print(f"smoothed as interpolation at phase {phase}: r {r(base, run(smooth)):.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
