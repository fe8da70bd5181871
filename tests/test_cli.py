"""The command line's own rules: seeds are whole numbers ≥ 0, an error line never shares a line with a progress
bar, and Ctrl-C or SIGTERM ends with one line, not a traceback, after the command's own cleanup ran."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from styleblend.errors import StyleBlendError
from styleblend.progress import progress
from styleblend.runners import cli


@pytest.mark.parametrize("command", [["generate"], ["reproduce"], ["write-tiny"]])
def test_a_negative_seed_is_refused_naming_it(command, tmp_path, capsys):
    path = [str(tmp_path / "tiny")] if command == ["write-tiny"] else []
    with pytest.raises(SystemExit) as exit_:
        cli.main(command + path + ["--seed", "-1"])
    assert exit_.value.code == 2
    assert "argument --seed: '-1' is not a whole number ≥ 0" in capsys.readouterr().err


def _inside_a_live_bar(error):
    """A command that fails halfway through a comprehension over a progress bar, as ``evaluate`` does: the
    comprehension's frame, kept by the traceback, holds the bar's iterator, so the bar is still open when the
    error is printed."""
    def step(i):
        if i == 1:
            raise error

    def run(_args):
        return [step(i) for i in progress(range(3), "working")]
    return run


@pytest.fixture
def bars_on(monkeypatch):
    """Progress bars drawn, as in a terminal (the tests' environment turns them off)."""
    monkeypatch.delenv("STYLEBLEND_QUIET", raising=False)
    monkeypatch.delenv("CI", raising=False)


def test_an_error_line_starts_its_own_line_after_a_live_progress_bar(bars_on, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_evaluate", _inside_a_live_bar(StyleBlendError("the data is broken")))
    assert cli.main(["evaluate"]) == 2
    err = capsys.readouterr().err
    assert "working" in err, "the bar was drawn"
    assert re.search(r"(?m)^error: the data is broken$", err), repr(err)


def test_ctrl_c_prints_one_line_and_exits_130(bars_on, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_evaluate", _inside_a_live_bar(KeyboardInterrupt()))
    assert cli.main(["evaluate"]) == 130
    err = capsys.readouterr().err
    assert re.search(r"(?m)^interrupted$", err) and "Traceback" not in err, repr(err)


# a command that holds a scratch folder (as pretrain-toy and the trainings do) until it is stopped
SCRATCH_COMMAND = ("import sys, tempfile, time\nfrom styleblend.runners import cli\n"
                   "def slow(_args):\n    with tempfile.TemporaryDirectory(dir=sys.argv[1]):\n"
                   "        print('started', flush=True)\n        time.sleep(600)\n"
                   "cli._evaluate = slow\nsys.exit(cli.main(['evaluate']))")


def test_sigterm_runs_the_commands_cleanup_and_exits_143(tmp_path):
    """A batch system's SIGTERM (Slurm's preemption, ``timeout``) stops a command as Ctrl-C does: its ``with`` and
    ``finally`` blocks run, so no scratch folder is left beside the user's files."""
    proc = subprocess.Popen([sys.executable, "-c", SCRATCH_COMMAND, str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started", proc.communicate()
        assert len(list(tmp_path.iterdir())) == 1, "the command's scratch folder"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert err == "stopped by SIGTERM\n", repr(err)
    assert list(tmp_path.iterdir()) == [], "the scratch folder was removed"


def test_a_signal_reported_as_itself_when_a_library_wraps_it(monkeypatch, capsys):
    """Jittor turns the Stopped a signal raises in the middle of its compiler into a RuntimeError of its own; the
    command line still reports the signal (status 143), not a confusing error from inside Jittor."""
    def wrapped(_args):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here
        except KeyboardInterrupt as stop:
            raise RuntimeError("Wrong inputs arguments, Please refer to examples(help(jt.sync))") from stop
    monkeypatch.setattr(cli, "_evaluate", wrapped)
    assert cli.main(["evaluate"]) == 143
    assert capsys.readouterr().err == "stopped by SIGTERM\n"
