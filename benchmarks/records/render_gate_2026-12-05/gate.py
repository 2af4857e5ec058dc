"""Render-gate shift: out = prior * (1 + sigmoid(l - b) * softplus(g)) + r, b at inference; per case metrics.

The measurement now lives in ../cpu_rb05_2026-12-05/gate_shift.py (same arguments), which also applies a model's
residual bound; for this record's model (unbounded) it is the same computation:

    PYTHONPATH=. python gate.py MODEL 0,0.5,1,1.5,2.5 20000 20024 gate_cal.json
"""
import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parents[1] / "cpu_rb05_2026-12-05" / "gate_shift.py"), run_name="__main__")
