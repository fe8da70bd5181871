"""Jittor is imported in one place (styleblend.backend), so every code path runs on the device the user chose.

Notebooks 01–06 ran on the CPU on a GPU machine: their modules imported ``jittor`` directly and only notebook 00
called the function that switches CUDA on. The GPU cannot be shown here; the cause can.
"""
import ast
import os
import signal
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "styleblend"
ALLOWED = {"backend.py", "runtime.py"}  # runtime imports jittor inside start(), which backend calls


def jittor_imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "jittor")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "jittor":
            yield node.module


def test_no_module_imports_jittor_itself():
    offenders = {str(p.relative_to(PACKAGE)): list(jittor_imports(p)) for p in PACKAGE.rglob("*.py")
                 if p.name not in ALLOWED}
    assert {k: v for k, v in offenders.items() if v} == {}, "import jt/nn from styleblend.backend instead"


def test_the_check_finds_a_direct_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\ndef f():\n    from jittor import nn\n    import jittor.misc as m\n")
    assert list(jittor_imports(module)) == ["jittor", "jittor.misc"]


def test_any_module_sets_the_device_and_the_signal_handler():
    code = ("import signal, styleblend.sd.sampling as s; "
            "print(s.jt.flags.use_cuda, signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "STYLEBLEND_DEVICE": "cpu"})
    assert out.stdout.split()[-2:] == ["0", "True"]


def test_this_process_has_the_default_sigchld_handler():
    assert signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL
