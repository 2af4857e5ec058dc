#!/usr/bin/env python
"""Thin-slice CT through `jmmda infer`: wall time and peak memory of the whole command.

    python benchmarks/thin_slice.py [--slices 320] [--matrix 512] [--auto-mask] [--ras] [--tilt DEG] [--native-too]
                                    [--flip-average-too]

Builds a 512 x 512 x 320 (0.45 x 0.5 x 0.5 mm) CT from sample case phantom_003 (linear up-sampling + 6 HU
noise) and its brain mask, in LPS order (as DICOM series are read) or RAS (``--ras``: the NIfTI habit, one more
re-orientation copy each way), runs `jmmda infer` in a fresh process and samples its resident memory every 20 ms.
Targets of the pose/series issue: <= 30 s wall and <= 1.5 GB peak on the 2-core development machine.
``--native-too`` also runs the same model with its slab thickness unset (every thin slice through the network, as
before ``PreprocessConfig.slab_mm``) in the same invocation and reports the ratios. ``--tilt DEG`` gives the series
the geometry of a gantry tilt of DEG degrees about the left-right axis (same voxels): thin tilted slices are
re-sliced onto axial planes before the slabs. ``--flip-average-too`` also runs `jmmda infer --flip-average` (each
slice the mean of the network's answers to it and to its mirror image) in the same invocation and reports the ratios.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]


def build(tmp: Path, slices: int, matrix: int, ras: bool, tilt: float = 0.0):
    ct = sitk.ReadImage(str(ROOT / "sample_data/studies/phantom_003.nii.gz"))
    m = sitk.ReadImage(str(ROOT / "sample_data/studies/labels/brainmask/phantom_003.nii.gz"))
    ext = [s * n for s, n in zip(ct.GetSpacing(), ct.GetSize())]
    ref = sitk.Image([matrix, matrix, slices], sitk.sitkInt16)
    ref.SetSpacing((ext[0] / matrix, ext[1] / matrix, ext[2] / slices))
    ref.SetDirection(ct.GetDirection())
    ref.SetOrigin(ct.GetOrigin())
    thin = sitk.GetArrayFromImage(sitk.Resample(ct, ref, sitk.Transform(), sitk.sitkLinear, -1024)).astype(np.float32)
    thin += np.random.default_rng(0).normal(0, 6, thin.shape).astype(np.float32)
    out = sitk.GetImageFromArray(np.round(thin).astype(np.int16))
    out.CopyInformation(ref)
    mask = sitk.Resample(m, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    if tilt:  # the same voxels on slices angled about the left-right axis
        c, s_ = np.cos(np.radians(tilt)), np.sin(np.radians(tilt))
        d = np.array(ref.GetDirection()).reshape(3, 3) @ np.array([[1, 0, 0], [0, c, -s_], [0, s_, c]])
        for img in (out, mask):
            img.SetDirection(tuple(d.ravel()))
    if not ras:
        out, mask = sitk.DICOMOrient(out, "LPS"), sitk.DICOMOrient(mask, "LPS")
    sitk.WriteImage(out, str(tmp / "ct.nii.gz"))
    sitk.WriteImage(mask, str(tmp / "mask.nii.gz"))


def measure(cmd) -> tuple[float, int, int, str]:
    """Runs one command; returns (wall s, peak RSS bytes sampled every 20 ms, exit code, stderr)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ps, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    return wall, peak, proc.returncode, proc.stderr.read().decode()


def native_copy(model: str, dst: Path) -> Path:
    """The model with its slab thickness unset: every slice through the network on its own, as before slabs."""
    from jmmda_model.checkpoint import atomic_save, load

    ck = load(model)
    ck["preprocess"] = {**ck["preprocess"], "slab_mm": None}
    return atomic_save(ck, dst)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slices", type=int, default=320)
    p.add_argument("--matrix", type=int, default=512)
    p.add_argument("--auto-mask", action="store_true", help="let jmmda infer compute the brain mask")
    p.add_argument("--ras", action="store_true")
    p.add_argument("--tilt", type=float, default=0.0, help="gantry tilt of the built series, degrees")
    p.add_argument("--model", default=str(ROOT / "apps/ct2dwi/model/jmmda_demo.pt"))
    p.add_argument("--native-too", action="store_true",
                   help="also run the same model with its slab thickness unset (each thin slice through the network, "
                        "as before slabs), in the same invocation, and report the ratios")
    p.add_argument("--flip-average-too", action="store_true",
                   help="also run `jmmda infer --flip-average` in the same invocation, and report the ratios")
    a = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        build(tmp, a.slices, a.matrix, a.ras, a.tilt)
        arms = [("model as shipped", a.model, [])]
        if a.native_too:
            arms.append(("native slices (slab_mm unset)", str(native_copy(a.model, tmp / "native.pt")), []))
        if a.flip_average_too:
            arms.append(("flip average (--flip-average)", a.model, ["--flip-average"]))
        for name, model, extra in arms:
            cmd = [sys.executable, "-m", "jmmda_model.cli", "infer", "--model", model, "--ct", str(tmp / "ct.nii.gz"),
                   "--out", str(tmp / "thin_synthetic.nii.gz"), "--device", "cpu", *extra]
            if not a.auto_mask:
                cmd += ["--mask", str(tmp / "mask.nii.gz")]
            wall, peak, rc, err = measure(cmd)
            if rc:
                print(err[-2000:], file=sys.stderr)
                return rc
            rows.append((name, wall, peak))
            print(f"{a.matrix}x{a.matrix}x{a.slices} {'RAS' if a.ras else 'LPS'} {'auto mask' if a.auto_mask else 'mask given'}"
                  f"{f', tilted {a.tilt:g} deg' if a.tilt else ''}, "
                  f"{name}: wall {wall:.1f} s (target 30), peak RSS {peak / 2**30:.2f} GiB (target 1.5); "
                  f"{'MET' if wall <= 30 and peak <= 1.5 * 2**30 else 'MISSED'}", flush=True)
    for name, wall, peak in rows[1:]:
        print(f"ratio shipped / {name}: wall {rows[0][1] / wall:.2f}, peak RSS {rows[0][2] / peak:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
