#!/usr/bin/env python
"""The operating point of a trained model's infarct-probability map, chosen where its temperature was fitted: its
validation phantoms (seeds 40000-40011, built as ``train_demo.py`` builds them), through the trainer's own
validation (``Trainer._validate``: the same temperature fit, ``metrics.operating_threshold``: the lowest threshold
with <= 2 false-positive clusters of >= 0.5 mL per case). For a model trained before the trainer kept the point.

    python operating_point.py MODEL.pt            prints the refitted temperature (must equal the stored one) and
                                                  the point
    python operating_point.py MODEL.pt --write    also stores the point in the model's lesion_calibration
                                                  (atomic; the weights and the temperature are left as they are)
"""
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import learning_curves as lcb  # noqa: E402
import train_demo  # noqa: E402

from jmmda_model import checkpoint as ckpt_io  # noqa: E402
from jmmda_model.export import load_generator  # noqa: E402
from jmmda_model.preprocess import PreprocessConfig  # noqa: E402
from jmmda_model.trainer import TrainConfig, Trainer  # noqa: E402

model = Path(sys.argv[1])
ck = ckpt_io.load(model)
stored = ck.get("lesion_calibration") or {}
seeds = range(train_demo.VAL_SEED0, train_demo.VAL_SEED0 + len(stored.get("fitted_on") or range(12)))
val = lcb.make_cases(seeds, PreprocessConfig(), 1)
assert [c.id for c in val] == list(stored.get("fitted_on") or [c.id for c in val]), "not the model's validation cases"
cfg = TrainConfig(generator=ck["generator_config"], preprocess=ck["preprocess"], device="cpu", select_metric="lesion",
                  progress=False, tensorboard=False)
with tempfile.TemporaryDirectory() as tmp:
    trainer = Trainer(cfg, tmp)
    net, _ = load_generator(model)
    vm, cal = trainer._validate(val, net=net.eval())
print(json.dumps({"model": model.name, "stored_temperature": stored.get("temperature"),
                  "refitted_temperature": cal["temperature"], "operating_point": cal.get("operating_point"),
                  "validation": {k: vm[k] for k in ("psnr_brain", "lesion_sensitivity", "false_bright_ml", "prob_ece",
                                                    "prob_sensitivity_at_2fp", "prob_sensitivity_at_2fp_qualifying")}},
                 indent=1))
if "--write" in sys.argv:
    if abs(cal["temperature"] - stored["temperature"]) > 1e-3 * stored["temperature"]:
        sys.exit("the refitted temperature differs from the stored one: not the model's validation, nothing written")
    ck["lesion_calibration"] = {**stored, "operating_point": cal["operating_point"]}
    ckpt_io.atomic_save(ck, model)
    print(f"wrote the operating point into {model}")
