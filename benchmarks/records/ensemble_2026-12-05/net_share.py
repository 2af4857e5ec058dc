#!/usr/bin/env python
"""What share of a thin-slice synthesis the network takes (what an ensemble of k members multiplies): the CT of
benchmarks/thin_slice.py (512 x 512 x 320 from sample case phantom_003), synthesised in-process by the shipped demo
with Synthesizer.predict_slices timed.        python net_share.py"""
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
import thin_slice  # noqa: E402

from jmmda_model.clinical.imageio import read_image  # noqa: E402
from jmmda_model.inference import Synthesizer  # noqa: E402

with tempfile.TemporaryDirectory() as tmp:
    thin_slice.build(Path(tmp), 320, 512, False)
    ct, mask = read_image(Path(tmp) / "ct.nii.gz", "CT"), read_image(Path(tmp) / "mask.nii.gz", "brain mask")
    syn = Synthesizer(ROOT / "apps/ct2dwi/model/jmmda_demo.pt", device="cpu")
    spent = [0.0]
    inner = syn.predict_slices

    def timed(*a, **k):
        t = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            spent[0] += time.perf_counter() - t

    syn.predict_slices = timed
    t0 = time.perf_counter()
    syn(ct, mask, return_probability=True)
    total = time.perf_counter() - t0
print(f"synthesis of the 512 x 512 x 320 CT (reading excluded): {total:.1f} s, of which the network {spent[0]:.1f} s "
      f"({100 * spent[0] / total:.0f} %); an ensemble of k members adds (k - 1) x {spent[0]:.1f} s")
