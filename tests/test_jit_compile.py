"""Jittor's parallel compile, replaced (styleblend.jit_compile): results, errors and a dead worker.

Each command goes through Jittor's own ``do_compile`` (its cache check included) in a fresh worker process. With
Jittor's forked pool, a worker that died left the caller waiting for ever, or ended it without a word through
Jittor's SIGCHLD handler (docs/first-run.md); here it is an error.
"""
import signal
import stat
import subprocess
import sys

import jittor_utils
import pytest

from styleblend import jit_compile


def _command(compiler, source, output):
    return f'"{compiler}" "{source}" -shared -fPIC -o "{output}"'


def _script(path, body):
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_run_cmds_compiles_every_file_and_is_installed_for_jittor(tmp_path):
    sources = []
    for i in range(3):
        sources.append(tmp_path / f"f{i}.cc")
        sources[-1].write_text(f"extern \"C\" int f{i}() {{ return {i}; }}\n")
    cmds = [_command("g++", s, s.with_suffix(".so")) for s in sources]
    jit_compile.run_cmds(cmds, str(tmp_path), str(tmp_path), "test")
    assert all(s.with_suffix(".so").is_file() for s in sources)
    assert jittor_utils.run_cmds is jit_compile.run_cmds, "styleblend.backend installs it before importing Jittor"


def test_a_failing_compile_raises(tmp_path):
    source = tmp_path / "bad.cc"
    source.write_text("this is not C++\n")
    with pytest.raises(Exception, match="bad.cc"):
        jit_compile.run_cmds([_command("g++", source, tmp_path / "bad.so")], str(tmp_path), str(tmp_path), "test")


def test_a_worker_killed_by_a_signal_is_an_error_not_a_hang(tmp_path):
    source = tmp_path / "k.cc"
    source.write_text("int k;\n")
    # the "compiler" kills the worker that runs it (its parent is the shell Jittor's popen starts)
    killer = _script(tmp_path / "killer.sh", 'kill -9 "$(ps -o ppid= -p "$PPID" | tr -d " ")"')
    # stands for Jittor's SIGCHLD handler, which ends the process when a child dies by a signal
    signal.signal(signal.SIGCHLD, lambda *_: pytest.fail("the SIGCHLD handler ran"))
    try:
        with pytest.raises(jit_compile.CompileError, match="worker died"):
            jit_compile.run_cmds([_command(killer, source, tmp_path / "k.so")], str(tmp_path), str(tmp_path), "t")
        assert signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def test_notebook_kernels_compile_operators_in_their_main_thread(monkeypatch):
    from ipykernel.kernelapp import IPKernelApp

    assert jit_compile.flags() == {}, "this pytest process is no notebook kernel"
    monkeypatch.setattr(IPKernelApp, "initialized", classmethod(lambda cls: True))
    assert jit_compile.flags() == {"use_parallel_op_compiler": "0"}


def test_in_a_real_kernel_the_flag_reaches_jittor(tmp_path):
    import nbformat
    import papermill

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from styleblend.backend import jt\nprint('parallel op compiler', jt.flags.use_parallel_op_compiler)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "in.ipynb")
    out = papermill.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), progress_bar=False)
    assert "parallel op compiler 0" in out.cells[0].outputs[0]["text"]


def test_a_script_without_a_main_guard_is_not_run_again_by_the_workers(tmp_path):
    """multiprocessing's spawn would import the caller's __main__ in every worker; these workers do not."""
    source = tmp_path / "m.cc"
    source.write_text("int m;\n")
    marker = tmp_path / "runs.txt"
    script = tmp_path / "script.py"
    script.write_text(f"""from styleblend import jit_compile
open({str(marker)!r}, "a").write("run\\n")
jit_compile.run_cmds([{_command("g++", source, tmp_path / "m.so")!r}], {str(tmp_path)!r}, {str(tmp_path)!r}, "t")
""")
    subprocess.run([sys.executable, str(script)], check=True, timeout=120)
    assert marker.read_text() == "run\n" and (tmp_path / "m.so").is_file()
