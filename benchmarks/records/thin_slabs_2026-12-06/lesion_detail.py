"""Per lesion, for chosen phantoms of thin_vs_slab.py: volume, CT contrast, true and synthetic ratios on the 1 mm grid,
the network on the thin slices and on the 5 mm slabs.

    python lesion_detail.py MODEL SEED [SEED ...]
"""
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import thin_vs_slab as t  # noqa: E402

syn = t.Synthesizer(sys.argv[1], device="cpu")
for seed in (int(s) for s in sys.argv[2:]):
    c = t.thin_case(seed)
    ct, brain, lesion, dwi = c["ct"], c["brain"], c["lesion"], c["dwi"]
    n = ct.shape[0]
    y_thin = syn.predict_volume(ct, brain, (1.0, 1.8, 1.8))[0]
    ct_s, brain_s = t.to_slabs(ct, t.blocks(len(ct))), t.slab_mask(brain, t.blocks(len(brain)))
    y_back = t.from_slabs(syn.predict_volume(ct_s, brain_s, (5.0, 1.8, 1.8))[0], t.blocks(n))
    a = t.metrics.lesion_metrics(y_thin, dwi, brain, lesion, ct_hu=ct, spacing=(1.0, 1.8, 1.8))["lesions"]
    b = t.metrics.lesion_metrics(y_back, dwi, brain, lesion, ct_hu=ct, spacing=(1.0, 1.8, 1.8))["lesions"]
    for la, lb in zip(a, b):
        print(f"seed {seed}: {la['volume_ml']:.2f} mL, CT contrast {la['ct_contrast_hu']:.1f} HU, true ratio "
              f"{la['ratio_real']:.2f}; synthetic ratio thin slices {la['ratio_syn']:.2f}, slabs {lb['ratio_syn']:.2f}",
              flush=True)
