"""Validation curves of the demo's training continued from its step-4576 checkpoint (record demo_cont_2026-12-05).

Reads each run folder's status.json (the trainer's validation history: 12 validation phantoms, seeds 40000-40011,
20 lesions; the same phantoms select the epoch and fit the temperature, so these are not test figures) and writes
one markdown table per run. Usage: python curves.py RUN_DIR[=label] ... > curves.md
"""
import json
import sys
from pathlib import Path


def rows(run: Path):
    status = json.loads((run / "status.json").read_text())
    for r in status["history"]:
        v = r["val"]
        yield (r["step"], r.get("weights", "-"), v["psnr_brain"], v["lesion_sensitivity"], int(v["lesions_total"]),
               int(v["lesions_darker"]), v["false_bright_ml"], v.get("prob_ece", float("nan")),
               v.get("prob_sensitivity_at_2fp", float("nan")), bool(r.get("best")))


def main(argv):
    for arg in argv:
        path, _, label = arg.partition("=")
        print(f"## {label or path}\n")
        print("| step | weights | in-brain PSNR dB | lesions shown | darker | false-bright mL/case | ECE | "
              "probability sensitivity at <= 2 FP | selected so far |")
        print("|---|---|---|---|---|---|---|---|---|")
        for step, w, psnr, sens, n, dark, fb, ece, s2, best in rows(Path(path)):
            print(f"| {step} | {w} | {psnr:.2f} | {round(sens * n)} / {n} | {dark} | {fb:.1f} | {ece:.3f} | "
                  f"{s2:.2f} | {'best' if best else ''} |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
