# Builds the phantom file of learning_curves.py for 480 training phantoms: the 120 of the lifted-prior runs'
# file (seeds 10000-10119, the same objects) plus seeds 10120-10479 built here; calibration and test sets reused.
import os, pickle, sys, time
sys.path.insert(0, "benchmarks")
from learning_curves import make_cases, TRAIN_SEED0
from jmmda_model.preprocess import PreprocessConfig
t0 = time.time()
with open("runs/curves_lift_epyc/phantoms_120_12_24.pkl", "rb") as f:
    train, cal, test = pickle.load(f)
assert [lc.id for lc in train][:2], "empty"
more = make_cases(range(TRAIN_SEED0 + 120, TRAIN_SEED0 + 480), PreprocessConfig(), 1)
train = list(train) + list(more)
out = "runs/curves_data480/phantoms_480_12_24.pkl"
with open(out + ".tmp", "wb") as f:
    pickle.dump((train, cal, test), f)
os.replace(out + ".tmp", out)
print(f"{len(train)} training phantoms ({[lc.id for lc in train[118:122]]}) in {time.time() - t0:.0f} s", flush=True)
