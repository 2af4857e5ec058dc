#!/usr/bin/env python
"""Adds the mirrored CT (``loaded_case``'s, as the served path used it) to dumped cases: mirror_<seed>.npz beside
case_<seed>.npz. Resumable.      python add_mirror.py CASEDIR"""
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from jmmda_model.phantom import loaded_case  # noqa: E402
from jmmda_model.preprocess import PreprocessConfig  # noqa: E402

pre = PreprocessConfig.from_dict({**PreprocessConfig().to_dict(), "mirror_channels": True})
for f in sorted(Path(sys.argv[1]).glob("case_*.npz"))[int(sys.argv[2])::int(sys.argv[3])]:
    seed = int(f.stem.split("_")[1])
    out = f.with_name(f"mirror_{seed}.npz")
    if out.exists():
        continue
    lc = loaded_case(seed, pre)
    assert np.array_equal(lc.ct_hu.astype(np.float32), np.load(f)["ct"]), f
    tmp = out.with_name(f".mirror_{seed}.tmp.npz")
    np.savez_compressed(tmp, mirror=(lc.mirror_hu if lc.mirror_hu is not None else lc.ct_hu).astype(np.float32))
    tmp.replace(out)
