import sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3] / "tests"))
import numpy as np, SimpleITK as sitk
import test_pose as tp
from conftest import DEMO_MODEL
from jmmda_model.inference import Synthesizer
model = sys.argv[1] or DEMO_MODEL
sig = float(sys.argv[2])
sc = tp.Scanner(); syn = Synthesizer(model, device="cpu")
if sig > 0:
    sc.fine["ct"] = sitk.SmoothingRecursiveGaussian(sc.fine["ct"], sig)
c = sc.scan(); c_out, _, _ = syn(c["ct"], c["brainmask"]); co = sitk.GetArrayFromImage(c_out)
brain = sitk.GetArrayFromImage(c["brainmask"]) > 0
for pose in ("shifted 7 mm", "tilted 15 deg"):
    rot, shift, head = tp.POSES[pose]; s = sc.scan(rot, shift, head); o, _, _ = syn(s["ct"], s["brainmask"])
    back = tp.synthesis_on_centred_grid(o, s["brainmask"], c["ct"], sc, head); m = brain & (back > 0)
    print("fine-CT smoothing", sig, pose, "r", round(float(np.corrcoef(co[m], back[m])[0, 1]), 3))
