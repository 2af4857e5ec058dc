import sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3] / "tests"))
import numpy as np, SimpleITK as sitk
import test_pose as tp
from conftest import DEMO_MODEL
from jmmda_model.inference import Synthesizer
from jmmda_model.prior import TissuePrior
from jmmda_model.clinical.midplane import estimate_midplane, mirror_or_self
model = sys.argv[1] if len(sys.argv) > 1 else DEMO_MODEL
sc = tp.Scanner(); syn = Synthesizer(model, device="cpu")
pr = TissuePrior.from_dict(syn.pre.tissue_prior); print("lift", pr.mirror_lift_hu)
def prior_img(scan):
    a = sitk.GetArrayFromImage(scan["ct"]).astype(np.float32); b = sitk.GetArrayFromImage(scan["brainmask"])
    sp = tuple(reversed(scan["ct"].GetSpacing())); pl = estimate_midplane(a, sp)
    p = pr.predict(a, b, sp, mirror_or_self(a, pl, sp)); o = sitk.GetImageFromArray(p); o.CopyInformation(scan["ct"]); return o
c = sc.scan(); pc = sitk.GetArrayFromImage(prior_img(c))
brain = sitk.GetArrayFromImage(c["brainmask"]) > 0
for pose in tp.POSES:
    rot, shift, head = tp.POSES[pose]; s = sc.scan(rot, shift, head)
    back = tp.synthesis_on_centred_grid(prior_img(s), s["brainmask"], c["ct"], sc, head)
    m = brain & (back > 0)
    print(pose, "prior r", round(float(np.corrcoef(pc[m], back[m])[0, 1]), 3))
import scipy.ndimage as ndi, jmmda_model.prior as P
def fine_dist(brain, sp, f=5):
    up = ndi.zoom(brain.astype(np.float32), (f, 1, 1), order=1, mode="nearest") > 0.5
    d = ndi.distance_transform_edt(up, sampling=(sp[0] / f, sp[1], sp[2]))
    return d[f // 2::f][: brain.shape[0]]
orig = P.ndi.distance_transform_edt
def patched(mask, sampling=None):
    return fine_dist(mask, sampling) if sampling is not None and sampling[0] > 2 * sampling[1] else orig(mask, sampling=sampling)
class NS: pass
ns = NS(); ns.__dict__.update({k: getattr(ndi, k) for k in dir(ndi) if not k.startswith("_")}); ns.distance_transform_edt = patched
P.ndi = ns
pc = sitk.GetArrayFromImage(prior_img(c))
for pose in ("tilted 15 deg", "shifted 7 mm"):
    rot, shift, head = tp.POSES[pose]; s = sc.scan(rot, shift, head)
    back = tp.synthesis_on_centred_grid(prior_img(s), s["brainmask"], c["ct"], sc, head)
    m = brain & (back > 0)
    print(pose, "prior r with z-supersampled distance", round(float(np.corrcoef(pc[m], back[m])[0, 1]), 3))
