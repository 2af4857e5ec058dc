"""Probability-map rim probe (see how.txt): python probe.py OUT.json, run from the tree under test."""
import sys, json
from pathlib import Path
import numpy as np, SimpleITK as sitk
from jmmda_model.inference import Synthesizer
from jmmda_model.clinical.geometry import resample_inplane, to_axial
ROOT = Path.cwd()
D = ROOT / "sample_data" / "studies"
syn = Synthesizer(ROOT / "apps" / "ct2dwi" / "model" / "jmmda_demo.pt", device="cpu")
res = {}
for i in range(8):
    n = f"phantom_{i:03d}"
    ct = resample_inplane(to_axial(sitk.ReadImage(f"{D}/{n}.nii.gz")), (0.9, 0.9))
    m = resample_inplane(to_axial(sitk.ReadImage(f"{D}/labels/brainmask/{n}.nii.gz")), (0.9, 0.9), label=True)
    les = resample_inplane(to_axial(sitk.ReadImage(f"{D}/labels/lesion/{n}.nii.gz")), (0.9, 0.9), label=True)
    out, used, info, prob = syn(ct, m, return_probability=True)
    p = sitk.GetArrayFromImage(prob); L = sitk.GetArrayFromImage(les) > 0; B = sitk.GetArrayFromImage(used) > 0
    from scipy import ndimage as ndi
    rim = B & ~ndi.binary_erosion(B, np.ones((1,3,3)))
    res[n] = {"lesion_mean_p": float(p[L & B].mean()) if (L & B).any() else None,
              "lesion_rim_mean_p": float(p[L & rim].mean()) if (L & rim).any() else None,
              "lesion_rim_vox": int((L & rim).sum()), "brain_rim_mean_p": float(p[rim].mean()),
              "lesion_vox": int((L&B).sum()), "p_ge_05_in_lesion": int((p[L & B] >= 0.5).sum())}
json.dump(res, open(sys.argv[1], "w"), indent=1)
print(json.dumps(res, indent=1))
