"""Diagnostic: shift the render gate at inference, out = prior * (1 + sigmoid(l - b) * softplus(g)) + r (the
residual bounded as the model was trained), b = 0 the model as trained; served path, per-shift metrics.

    PYTHONPATH=. python benchmarks/records/cpu_rb05_2026-12-05/gate_shift.py MODEL 0,1,2 FIRST_SEED END_SEED OUT.json
"""
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import learning_curves as lcb  # noqa: E402

from jmmda_model import networks  # noqa: E402
from jmmda_model.inference import Synthesizer  # noqa: E402
from jmmda_model.phantom import loaded_case  # noqa: E402
from jmmda_model.preprocess import PreprocessConfig  # noqa: E402

SHIFT = {"b": 0.0}


def forward(self, h, prior):
    r, logit, g = self.parts(h)  # the residual bounded as the model was trained
    out = prior * (1.0 + torch.sigmoid(logit - SHIFT["b"]) * F.softplus(g)) + r
    return out.clamp(0.0, 1.0), logit


networks.RenderHead.forward = forward
torch.set_num_threads(1)
syn = Synthesizer(sys.argv[1], device="cpu")
shifts = [float(v) for v in sys.argv[2].split(",")]
pre = PreprocessConfig.from_dict({**PreprocessConfig().to_dict(), "mirror_channels": True})
cases = [loaded_case(s, pre) for s in range(int(sys.argv[3]), int(sys.argv[4]))]
res = {}
for b in shifts:
    SHIFT["b"] = b
    t = time.time()

    def pred(lc):
        y, lg, _ = syn.predict_volume(lc.ct_hu, lc.brain, lc.spacing_zyx, lc.midplane, lc.mirror_hu)
        return y, lg

    m = lcb.evaluate(pred, cases, with_prob=syn.probability)
    m.pop("reliability", None)
    res[str(b)] = m
    print(f"b {b}: shown {m['qualifying_sensitivity']:.3f} of {m['qualifying_lesions']} darker {m['darker']} "
          f"({m['darker_qualifying']} q) of {m['lesions']} fb {m['false_bright_ml']:.2f} PSNR {m['psnr_brain']:.3f} "
          f"({time.time() - t:.0f} s)", flush=True)
    Path(sys.argv[5]).write_text(json.dumps(res, indent=1))
