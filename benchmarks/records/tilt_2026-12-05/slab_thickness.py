import sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3] / "tests"))
import numpy as np, SimpleITK as sitk
import test_pose as tp
from conftest import DEMO_MODEL
from jmmda_model.inference import Synthesizer
from jmmda_model.prior import TissuePrior
from jmmda_model.clinical.midplane import estimate_midplane, mirror_or_self
K = int(sys.argv[1]); net = len(sys.argv) > 2
syn = Synthesizer(DEMO_MODEL, device="cpu"); pr = TissuePrior.from_dict(syn.pre.tissue_prior)
def scan(self, rotation=np.eye(3), shift=(0.0, 0.0, 0.0), head_deg=0.0, size=(176, 176, 150 // K)):
    d = np.diag([-1.0, -1.0, 1.0]) @ rotation; sp = np.array([1.8, 1.8, 1.0]); n = np.array([size[0], size[1], size[2] * K])
    origin = self.centre + np.asarray(shift) - d @ ((n - 1) / 2 * sp); out = {}
    for k, img in self.fine.items():
        r = sitk.Resample(img, [int(v) for v in n], sitk.Transform(), sitk.sitkLinear, tuple(origin), tuple(sp), tuple(d.ravel()), -1024.0 if k == "ct" else 0.0, sitk.sitkFloat32)
        a = sitk.GetArrayFromImage(r).reshape(size[2], K, size[1], size[0]).mean(1)
        a = (a > 0.5).astype(np.uint8) if k == "brainmask" else (np.round(a).astype(np.int16) if k == "ct" else a)
        o = sitk.GetImageFromArray(a); o.SetSpacing((1.8, 1.8, float(K))); o.SetDirection(tuple(d.ravel()))
        o.SetOrigin(tuple(origin + d @ np.array([0.0, 0.0, (K - 1) / 2]))); out[k] = o
    return out
tp.Scanner.scan = scan
sc = tp.Scanner()
def prior_img(scan):
    a = sitk.GetArrayFromImage(scan["ct"]).astype(np.float32); b = sitk.GetArrayFromImage(scan["brainmask"])
    sp = tuple(reversed(scan["ct"].GetSpacing())); pl = estimate_midplane(a, sp)
    p = pr.predict(a, b, sp, mirror_or_self(a, pl, sp)); o = sitk.GetImageFromArray(p); o.CopyInformation(scan["ct"]); return o
f = (lambda s: syn(s["ct"], s["brainmask"])[0]) if net else prior_img
c = sc.scan(); pc = sitk.GetArrayFromImage(f(c)); brain = sitk.GetArrayFromImage(c["brainmask"]) > 0
for pose in ("shifted 7 mm", "tilted 15 deg"):
    rot, shift, head = tp.POSES[pose]; s = sc.scan(rot, shift, head)
    back = tp.synthesis_on_centred_grid(f(s), s["brainmask"], c["ct"], sc, head); m = brain & (back > 0)
    tb = tp._on_centred_grid(s["dwi"], c["ct"], sc, head); cd = sitk.GetArrayFromImage(c["dwi"])
    print("slab", K, "mm", "network" if net else "prior", pose, "r", round(float(np.corrcoef(pc[m], back[m])[0, 1]), 3), "true", round(float(np.corrcoef(cd[m], tb[m])[0, 1]), 3))
