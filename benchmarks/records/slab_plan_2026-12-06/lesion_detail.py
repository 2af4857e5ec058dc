"""The lesions of one phantom in two arms of plan_vs_blocks.py (3 mm series as they are, and on 5 mm slabs): volume,
CT contrast, true and synthetic ratio, shown.

    python lesion_detail.py MODEL SEED [MM]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import plan_vs_blocks as p  # noqa: E402

t = p.t
model, seed = sys.argv[1], int(sys.argv[2])
mm = int(sys.argv[3]) if len(sys.argv) > 3 else 3
syn = t.Synthesizer(model, device="cpu")
c = t.thin_case(seed, slice_multiple=1)
ct, brain, lesion, dwi = c["ct"], c["brain"], c["lesion"], c["dwi"]
thick = p.slab_plan(len(ct), 1.0, float(mm))
ct_m, brain_m = p.to_slabs(ct, thick), p.slab_mask(brain, thick)
for name, plan in (("as they are", None), ("5 mm slabs", p.slab_plan(len(ct_m), float(mm), 5.0, -(mm - 1) / (2.0 * mm)))):
    y = p.from_slabs(p.on_slabs(syn, ct_m, brain_m, float(mm), plan), thick)
    m = t.metrics.lesion_metrics(y, dwi, brain > 0, lesion, ct_hu=ct, spacing=p.SP)
    for L in m["lesions"]:
        print(f"seed {seed} {mm} mm {name}: {L['volume_ml']:.2f} mL, CT contrast {L.get('ct_contrast_hu', float('nan')):.1f} HU, "
              f"true ratio {L['ratio_real']:.2f}, synthetic {L['ratio_syn']:.2f}, qualifying "
              f"{t.metrics.qualifying(L)}, shown {L['shown']}")
