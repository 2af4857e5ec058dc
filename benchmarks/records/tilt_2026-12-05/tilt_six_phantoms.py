"""Tilt over several phantoms: direct (product) vs re-sliced to axial, per model; r vs centred and superpixel vs truth."""
import sys, json
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3] / "tests"))
import numpy as np, SimpleITK as sitk
import test_pose as tp
from jmmda_model.inference import Synthesizer
from jmmda_model.metrics import superpixel_correlation
models = {"shipped": str(__import__("conftest").DEMO_MODEL),
          "candidate": "runs/demo_lift/model.pt"}
syns = {k: Synthesizer(v, device="cpu") for k, v in models.items()}
def reslice(s):
    ct = s["ct"]; d = np.array(ct.GetDirection()).reshape(3, 3); ex = d[:, 0]
    ez = np.array([0, 0, 1.0]); ez = ez - (ez @ ex) * ex; ez /= np.linalg.norm(ez); ey = np.cross(ez, ex); nd = np.stack([ex, ey, ez], 1)
    size = np.array(ct.GetSize()); sp0 = np.array(ct.GetSpacing())
    P = np.array([np.array(ct.TransformContinuousIndexToPhysicalPoint([float(v) for v in (np.array(c_) * (size - 1))])) for c_ in np.ndindex(2, 2, 2)]) @ nd
    lo, hi = P.min(0), P.max(0); nsp = sp0.copy(); nsize = np.ceil((hi - lo) / nsp).astype(int) + 1
    ref = sitk.Image([int(v) for v in nsize], sitk.sitkFloat32); ref.SetSpacing(tuple(nsp)); ref.SetDirection(tuple(nd.ravel())); ref.SetOrigin(tuple(nd @ lo))
    return ref
def run_resliced(syn, s):
    ref = reslice(s); ct = s["ct"]
    ax_ct = sitk.Cast(sitk.Round(sitk.Resample(sitk.Cast(ct, sitk.sitkFloat32), ref, sitk.Transform(), sitk.sitkLinear, -1024.0)), sitk.sitkInt16)
    ax_m = sitk.Cast(sitk.Resample(sitk.Cast(s["brainmask"], sitk.sitkFloat32), ref, sitk.Transform(), sitk.sitkLinear, 0.0) > 0.5, sitk.sitkUInt8)
    a_out = syn(ax_ct, ax_m)[0]
    na = sitk.GetArrayFromImage(sitk.Resample(a_out, ct, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    wa = sitk.GetArrayFromImage(sitk.Resample(sitk.Cast(ax_m, sitk.sitkFloat32), ct, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    tm = sitk.GetArrayFromImage(s["brainmask"]) > 0
    b = sitk.GetImageFromArray(np.where(tm & (wa > 0.05), na / np.maximum(wa, 1e-6), 0).astype(np.float32)); b.CopyInformation(ct); return b
def spr(scan, img):
    b = sitk.GetArrayFromImage(scan["brainmask"]) > 0
    return superpixel_correlation(sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(scan["dwi"]), b, spacing=(5.0, 1.8, 1.8))[0]
rot, shift, head = tp.POSES["tilted 15 deg"]
for seed in [int(v) for v in sys.argv[1:]]:
    tp.SEED = seed
    sc = tp.Scanner(); c = sc.scan(); s = sc.scan(rot, shift, head)
    brain = sitk.GetArrayFromImage(c["brainmask"]) > 0
    for name, syn in syns.items():
        co_img = syn(c["ct"], c["brainmask"])[0]; co = sitk.GetArrayFromImage(co_img)
        row = {"seed": seed, "model": name, "sp_centred": round(spr(c, co_img), 4)}
        for arm, out in (("direct", syn(s["ct"], s["brainmask"])[0]), ("resliced", run_resliced(syn, s))):
            back = tp.synthesis_on_centred_grid(out, s["brainmask"], c["ct"], sc, 0.0); m = brain & (back > 0)
            row[arm + "_r"] = round(float(np.corrcoef(co[m], back[m])[0, 1]), 4); row[arm + "_sp"] = round(spr(s, out), 4)
        print(json.dumps(row), flush=True)
