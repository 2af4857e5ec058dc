"""Help texts and the README list every command that exists: the jmmda CLI's subcommands, run.sh's commands and
the benchmark scripts. Each list is read from the code itself, so a command added without its documentation fails
here."""
import re
import subprocess
from pathlib import Path

from jmmda_model.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _jmmda_subcommands() -> list[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "cmd")
    return sorted(sub.choices)


def _run_sh_commands() -> list[str]:
    text = (ROOT / "run.sh").read_text(encoding="utf-8")
    body = text.split('case "$cmd" in', 1)[1]
    labels = re.findall(r"^  ([a-z|\-]+)\)", body, flags=re.M)
    return sorted({lab.split("|")[0] for lab in labels})


def _run_sh_help() -> str:
    out = subprocess.run(["bash", str(ROOT / "run.sh"), "help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_lists_are_read_from_the_code():
    # a parser change that hid the subcommands from this test would make the other checks vacuous
    assert {"train", "infer", "evaluate", "publish"} <= set(_jmmda_subcommands())
    assert {"setup", "serve", "test", "jmmda", "bench", "help"} <= set(_run_sh_commands())


def test_every_jmmda_subcommand_is_in_the_readme_and_the_help():
    helps = _run_sh_help()
    missing_readme = [c for c in _jmmda_subcommands() if not re.search(rf"jmmda {re.escape(c)}\b", README)]
    missing_help = [c for c in _jmmda_subcommands() if not re.search(rf"\b{re.escape(c)}\b", helps)]
    assert not missing_readme, f"jmmda subcommands not in README.md: {missing_readme}"
    assert not missing_help, f"jmmda subcommands not in ./run.sh help: {missing_help}"
    top = build_parser().format_help()
    assert all(c in top for c in _jmmda_subcommands())


def test_every_run_sh_command_is_in_the_readme_and_its_help():
    helps = _run_sh_help()
    cmds = _run_sh_commands()
    missing_readme = [c for c in cmds if f"run.sh {c}" not in README]
    missing_help = [c for c in cmds if c != "help" and f"./run.sh {c}" not in helps]
    assert not missing_readme, f"run.sh commands not in README.md: {missing_readme}"
    assert not missing_help, f"run.sh commands not in its own help: {missing_help}"


def test_every_benchmark_script_is_in_the_readme():
    scripts = sorted(p.name for p in (ROOT / "benchmarks").iterdir()
                     if p.suffix in (".py", ".sh") and not p.name.startswith("_"))
    assert scripts, "no benchmark scripts found"
    missing = [s for s in scripts if s not in README]
    assert not missing, f"benchmark scripts not in README.md: {missing}"
