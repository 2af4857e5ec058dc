#!/usr/bin/env python
"""Checkpoint (eager PyTorch) vs its TorchScript export: agreement and the model-part time, in one run.

    python benchmarks/export_speed.py --model apps/ct2dwi/model/jmmda_demo.pt \\
        --ct sample_data/studies/phantom_007.nii.gz --mask sample_data/studies/labels/brainmask/phantom_007.nii.gz

Both arms run the same prepared model input (every axial slice of the case, 2.5-D channels) through
``Synthesizer.predict_slices``; the arms alternate for ``--repeats`` rounds after one warm-up each, and the median
times are compared as a ratio (TorchScript / eager; below 1 = the export is faster). Prints the device, thread
count and versions it ran with, and the maximum |TorchScript - eager| over the volume.
"""
from __future__ import annotations

import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from infer_wall import case_parser  # benchmarks/ (puts the repository root on sys.path)


def main(argv=None):
    ap = case_parser(__doc__, mask_required=True, repeats=5)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    import numpy as np
    import SimpleITK as sitk
    import torch

    from jmmda_model.data import model_input
    from jmmda_model.export import export_torchscript
    from jmmda_model.inference import Synthesizer

    with tempfile.TemporaryDirectory() as tmp:
        ts = Path(tmp) / "model.ts"
        export_torchscript(a.model, ts)
        arms = {"eager": Synthesizer(a.model, device=a.device), "torchscript": Synthesizer(ts, device=a.device)}
        pre = arms["eager"].pre
        ct = sitk.GetArrayFromImage(sitk.ReadImage(a.ct)).astype(np.float32)
        brain = (sitk.GetArrayFromImage(sitk.ReadImage(a.mask)) > 0).astype(np.uint8)
        x = model_input(ct, brain, pre)
        outs = {k: s.predict_slices(x) for k, s in arms.items()}  # warm-up
        times = {k: [] for k in arms}
        for _ in range(a.repeats):
            for k, s in arms.items():
                t = time.perf_counter()
                s.predict_slices(x)
                times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {
        "ran": {"model": Path(a.model).name, "case": Path(a.ct).name, "slices": int(x.shape[0]), "slice_shape": list(x.shape[1:]),
                "repeats": a.repeats, "device": a.device, "cpu": platform.processor() or platform.machine(),
                "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
        "median_seconds": {k: round(v, 3) for k, v in med.items()},
        "ratio_torchscript_over_eager": round(med["torchscript"] / med["eager"], 3),
        "max_abs_diff": float(np.abs(outs["torchscript"] - outs["eager"]).max()),
    }
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
