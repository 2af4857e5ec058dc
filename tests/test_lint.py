import shutil
import subprocess
import sys

from conftest import ROOT


def test_no_undefined_names_or_unused_imports():
    ruff = shutil.which("ruff", path=str(ROOT / ".venv" / "bin")) or shutil.which("ruff")
    cmd = [ruff] if ruff else [sys.executable, "-m", "ruff"]
    r = subprocess.run(cmd + ["check", "--select", "F,E9", "jmmda_model", "apps", "tests", "benchmarks", "slicer_extension"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
