"""Records in the shipped demo checkpoint the slice thickness it was trained on (PreprocessConfig.slab_mm): its
training phantoms are drawn in 5 mm slices (PhantomConfig().spacing[2], see its model card). Same weights, same
everything else; rewritten atomically. Then the bundle is exported again from it:

    python benchmarks/records/thin_slabs_2026-12-06/set_slab.py apps/ct2dwi/model/jmmda_demo.pt
    jmmda export-bundle --model apps/ct2dwi/model/jmmda_demo.pt --out apps/ct2dwi/model/bundle --overwrite
"""
import sys
from pathlib import Path

from jmmda_model.checkpoint import atomic_save, load
from jmmda_model.phantom import PhantomConfig
from jmmda_model.preprocess import PreprocessConfig

path = Path(sys.argv[1])
ck = load(path)
before = dict(ck["preprocess"])
ck["preprocess"] = PreprocessConfig.from_dict({**before, "slab_mm": float(PhantomConfig().spacing[2])}).to_dict()
changed = {k for k in ck["preprocess"] if ck["preprocess"].get(k) != before.get(k)}
assert changed == {"slab_mm"}, changed
atomic_save(ck, path)
print(f"{path}: slab_mm {before.get('slab_mm')} -> {ck['preprocess']['slab_mm']}")
