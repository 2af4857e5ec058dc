#!/usr/bin/env python
"""The operating point of a trained model's infarct-probability map, chosen where its temperature was fitted: its
validation phantoms (seeds 40000-40011, built as ``train_demo.py`` builds them), through the trainer's own
validation (``Trainer._validate``: the same temperature fit, ``metrics.operating_threshold``: the lowest threshold
with <= 2 false-positive clusters of >= 0.5 mL per case). For a model trained before the trainer kept the point.

    python operating_point.py MODEL.pt            prints the refitted temperature (must equal the stored one) and
                                                  the point
    python operating_point.py MODEL.pt --write [FROC.json]
                                                  also stores the point in the model's lesion_calibration
                                                  (atomic; the weights and the temperature are left as they are)
                                                  and, given from_dumps.py's FROC.json of the same model's test
                                                  dump, the map's test figures at that point in its model card
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
    extra = [a for a in sys.argv[2:] if a != "--write"]
    if extra:
        import math

        sys.path.insert(0, str(ROOT / "benchmarks"))
        from lesion_audit import wilson

        froc = json.loads(Path(extra[0]).read_text())
        thr = cal["operating_point"]["threshold"]
        row = min(froc["froc_qualifying"], key=lambda r: abs(r["threshold"] - thr))
        n = row["lesions"]
        k = round(row["sensitivity"] * n)
        lo, hi = wilson(k, n)
        ok = row["sensitivity"] >= 0.85 and row["fp_per_case"] <= 2.0 and math.isfinite(row["sensitivity"])
        ck["model_card"]["probability_map"] = (
            f"operating point {thr:.2f} (the lowest threshold with <= 2 false-positive clusters of >= 0.5 mL per case on "
            f"the {cal['operating_point']['cases']} validation phantoms, where the temperature was fitted): on "
            f"{froc['cases']} test phantoms (seeds {froc['first'].split('_')[1]}-{froc['last'].split('_')[1]}) it finds "
            f"{k} of {n} qualifying lesions = {100 * k / n:.0f} % (95 % CI {100 * lo:.0f}-{100 * hi:.0f} %) with "
            f"{row['fp_per_case']:.2f} false-positive clusters per case: target (85 % at <= 2) "
            f"{'MET' if ok else 'MISSED'} by the touch rule (a cluster touching the lesion); pooled ECE "
            f"{froc['summary']['ece']:.3f}; all lesions (any size or CT contrast) "
            f"{100 * min(froc['froc_all'], key=lambda r: abs(r['threshold'] - thr))['sensitivity']:.0f} % at that point")
    ckpt_io.atomic_save(ck, model)
    print(f"wrote the operating point into {model}")
