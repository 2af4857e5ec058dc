#!/usr/bin/env python
"""Runs one model through the served path (``Synthesizer.predict_volume``, as lesion_audit.py) on phantoms built in
memory and keeps what a render rule needs, one compressed file per case: synthesis, calibrated probability, the
checkpoint's tissue prior, brain, lesion, true DWI, CT. Resumable (existing files are skipped).

    python dump_cases.py MODEL FIRST:END OUTDIR
"""
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from jmmda_model.inference import Synthesizer  # noqa: E402
from jmmda_model.phantom import loaded_case  # noqa: E402
from jmmda_model.preprocess import PreprocessConfig  # noqa: E402
from jmmda_model.prior import TissuePrior  # noqa: E402

model, seeds, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
a, b = (int(v) for v in seeds.split(":"))
out.mkdir(parents=True, exist_ok=True)
syn = Synthesizer(model, device="cpu")
pre = PreprocessConfig.from_dict({**PreprocessConfig().to_dict(), "mirror_channels": True})
for s in range(a, b):
    f = out / f"case_{s}.npz"
    if f.exists():
        continue
    lc = loaded_case(s, pre)
    y, logits, _ = syn.predict_volume(lc.ct_hu, lc.brain, lc.spacing_zyx, lc.midplane, lc.mirror_hu)
    bm = lc.brain > 0
    prob = syn.probability(logits) * bm
    prior = TissuePrior.from_dict(syn.pre.tissue_prior).predict(lc.ct_hu, lc.brain, lc.spacing_zyx, lc.mirror_hu)
    tmp = out / f".case_{s}.tmp.npz"
    np.savez_compressed(tmp, y=(y * bm).astype(np.float32), prob=prob.astype(np.float32), prior=prior,
                        brain=lc.brain, lesion=lc.lesion, dwi=lc.dwi, ct=lc.ct_hu.astype(np.float32),
                        spacing=np.asarray(lc.spacing_zyx, np.float64))
    tmp.replace(f)
    print(s, flush=True)
