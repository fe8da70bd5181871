"""Jittor's parallel compile, replaced (styleblend.jit_compile): results, errors and a dead worker.

Each command goes through Jittor's own ``do_compile`` (its cache check included) in a spawned worker. With
Jittor's forked pool, a worker that died left the caller waiting for ever, or ended it without a word through
Jittor's SIGCHLD handler (docs/first-run.md); here it is an error.
"""
import signal
import stat
import sys
from concurrent.futures.process import BrokenProcessPool

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
        with pytest.raises(BrokenProcessPool):
            jit_compile.run_cmds([_command(killer, source, tmp_path / "k.so")], str(tmp_path), str(tmp_path), "t")
        assert signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def test_notebook_kernels_compile_operators_in_their_main_thread(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipykernel", object())
    assert jit_compile.flags() == {"use_parallel_op_compiler": "0"}
    monkeypatch.delitem(sys.modules, "ipykernel")
    assert jit_compile.flags() == {}
