"""The lookup tables inside the audited checkpoints on the audit's 120 test phantoms (audits recorded before the
audit reported the table itself): in-brain PSNR and false-bright mL per case, mean."""
import json, sys
import numpy as np
sys.path.insert(0, ".")
from jmmda_model.checkpoint import load
from jmmda_model.metrics import lesion_metrics, psnr
from jmmda_model.phantom import loaded_case
from jmmda_model.preprocess import PreprocessConfig
from jmmda_model.prior import TissuePrior
models = dict(a.split("=") for a in sys.argv[1].split(","))
priors = {k: TissuePrior.from_dict(load(v)["preprocess"]["tissue_prior"]) for k, v in models.items()}
pre = PreprocessConfig.from_dict({**PreprocessConfig().to_dict(), "mirror_channels": True})
res = {k: {"psnr": [], "fb": []} for k in priors}
for s in range(30000, 30120):
    lc = loaded_case(s, pre)
    for k, pr in priors.items():
        t = pr.predict(lc.ct_hu, lc.brain, lc.spacing_zyx, lc.mirror_hu) * (lc.brain > 0)
        res[k]["psnr"].append(psnr(t, lc.dwi, lc.brain))
        res[k]["fb"].append(lesion_metrics(t, lc.dwi, lc.brain, lc.lesion, lc.ct_hu, lc.spacing_zyx)["false_bright_ml"])
out = {k: {"psnr_brain": float(np.mean(v["psnr"])), "false_bright_ml": float(np.mean(v["fb"])), "per_case_psnr": v["psnr"]} for k, v in res.items()}
json.dump(out, open(sys.argv[2], "w"), indent=1)
print({k: (round(v["psnr_brain"], 3), round(v["false_bright_ml"], 2)) for k, v in out.items()})
