"""Render-gate shift: out = prior * (1 + sigmoid(l - b) * softplus(g)) + r, b at inference; per case metrics."""
import sys, json, time
import torch
import torch.nn.functional as F
sys.path.insert(0, ".")
sys.path.insert(0, "benchmarks")
from jmmda_model import networks
from jmmda_model.inference import Synthesizer
from jmmda_model.phantom import loaded_case
from jmmda_model.preprocess import PreprocessConfig
import learning_curves as lcb

SHIFT = {"b": 0.0}
def fwd(self, h, prior):
    r, logit, g = self.conv(h).chunk(3, dim=1)
    out = prior * (1.0 + torch.sigmoid(logit - SHIFT["b"]) * F.softplus(g)) + r
    return out.clamp(0.0, 1.0), logit
networks.RenderHead.forward = fwd
syn = Synthesizer(sys.argv[1], device="cpu")
shifts = [float(v) for v in sys.argv[2].split(",")]
seeds = range(int(sys.argv[3]), int(sys.argv[4]))
pre = PreprocessConfig.from_dict({**PreprocessConfig().to_dict(), "mirror_channels": True})
cases = [loaded_case(s, pre) for s in seeds]
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
    print(f"b {b}: shown {m['qualifying_sensitivity']:.3f} of {m['qualifying_lesions']} darker {m['darker']} ({m['darker_qualifying']} q) of {m['lesions']} fb {m['false_bright_ml']:.2f} PSNR {m['psnr_brain']:.3f} ({time.time()-t:.0f} s)", flush=True)
    json.dump(res, open(sys.argv[5], "w"), indent=1)
