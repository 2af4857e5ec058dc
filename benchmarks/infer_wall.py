#!/usr/bin/env python
"""Wall time of one ``jmmda infer`` (read CT and mask, brain/head checks, model, write the SYNTHETIC NIfTI) in
one process, excluding interpreter start and imports; median of ``--repeats`` runs after one warm-up.

    python benchmarks/infer_wall.py --model apps/ct2dwi/model/jmmda_demo.pt \\
        --ct sample_data/studies/phantom_007.nii.gz --mask sample_data/studies/labels/brainmask/phantom_007.nii.gz
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def case_parser(doc: str, mask_required: bool = False, repeats: int = 3) -> argparse.ArgumentParser:
    """--model, --ct, --mask, --repeats: the options of the timing scripts that run one case."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--ct", required=True)
    ap.add_argument("--mask", required=mask_required, default=None)
    ap.add_argument("--repeats", type=int, default=repeats)
    return ap


def main(argv=None):
    a = case_parser(__doc__).parse_args(argv)
    import torch

    from jmmda_model.cli import main as jmmda

    with tempfile.TemporaryDirectory() as tmp:
        args = ["infer", "--model", a.model, "--ct", a.ct, "--out", str(Path(tmp) / "x_synthetic.nii.gz"), "--device", "cpu"]
        if a.mask:
            args += ["--mask", a.mask]
        jmmda(args)  # warm-up
        times = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            assert jmmda(args) == 0
            times.append(time.perf_counter() - t)
    import SimpleITK as sitk

    size = sitk.ReadImage(a.ct).GetSize() if Path(a.ct).is_file() else "DICOM"
    print(f"jmmda infer wall time (in-process, {torch.get_num_threads()} threads, volume {size}): "
          f"median {statistics.median(times):.2f} s over {a.repeats} runs ({', '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    main()
