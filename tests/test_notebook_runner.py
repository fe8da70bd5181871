"""The papermill runner behind `make reproduce`: report rows (per style and merged), a failing notebook stops only
its style, resume, SIGINT/SIGTERM end the whole process tree, one runner per style."""
import contextlib
import csv
import os
import signal
import subprocess
import sys
import time

import nbformat
import psutil
import pytest

from styleblend.checkpoints import StyleCheckpoint
from styleblend.errors import ConfigError
from styleblend.locks import LockedError, style_lock
from styleblend.runners.notebooks import still_running, died_logs, run_notebooks


def _notebook(path, body):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('style = "x"\nset_name = ""\ndata_root = ""\nresults_root = ""\n'
                                       'checkpoints_root = ""\noutput_root = ""\nmodel = ""\nrecipe_file = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def fake_notebooks(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    _notebook(folder / "00_ok.ipynb", "print('style', style)")
    _notebook(folder / "01_fails_for_b.ipynb", "assert style != 'b', 'style b is broken'")
    _notebook(folder / "02_after.ipynb", "print('after')")
    return folder


def test_failure_stops_its_style_only_and_rerun_resumes(tmp_path, fake_notebooks):
    out = tmp_path / "outputs"
    lines = []
    rows = run_notebooks("demo", tmp_path, ["a", "b"], tmp_path / "r", tmp_path / "c", out,
                         folder=fake_notebooks, echo=lines.append)
    status = {(r.style, r.notebook): r.status for r in rows}
    assert status == {("a", "00_ok"): "ok", ("a", "01_fails_for_b"): "ok", ("a", "02_after"): "ok",
                      ("b", "00_ok"): "ok", ("b", "01_fails_for_b"): "failed"}
    failed = next(r for r in rows if r.status == "failed")
    assert "style b is broken" in failed.message
    assert (out / "notebooks" / "b" / "01_fails_for_b.ipynb").exists(), "the failing executed notebook is kept"
    assert any("TINY" in line for line in lines), "the tiny-model banner is shown when no model is given"
    with open(out / "report.csv") as f:
        report = list(csv.DictReader(f))
    assert len(report) == 5 and all(float(r["peak_ram_mb"]) > 0 for r in report)
    assert "TINY" in (out / "report.md").read_text()
    for style, count in (("a", 3), ("b", 2)):
        with open(out / "reports" / f"{style}.csv") as f:
            assert [r["style"] for r in csv.DictReader(f)] == [style] * count, "each style has its own report"

    lines.clear()
    run_notebooks("demo", tmp_path, ["a", "b"], tmp_path / "r", tmp_path / "c", out, folder=fake_notebooks,
                  echo=lines.append)
    skipped = [line for line in lines if line.startswith("skip")]
    assert len(skipped) == 4, "notebooks that were ok are not run again"


def _one_notebook(tmp_path, name, body):
    """A notebooks folder holding only ``name``, whose second cell is ``body``."""
    folder = tmp_path / "nbs"
    folder.mkdir()
    _notebook(folder / name, body)
    return folder


def _run(tmp_path, styles, folder, **options):
    """run_notebooks quietly for set "demo", outputs in ``tmp_path / "outputs"``."""
    return run_notebooks("demo", tmp_path, styles, tmp_path / "r", tmp_path / "c", tmp_path / "outputs",
                         folder=folder, echo=lambda _: None, **options)


def test_a_recipe_file_reaches_every_notebook_and_a_bad_one_stops_before_any(tmp_path):
    folder = _one_notebook(tmp_path, "00_recipe.ipynb", "from styleblend.config import load_recipe\n"
                           "print('ti_steps', load_recipe(recipe_file or None).fine.ti_steps)")
    recipe = tmp_path / "short.yaml"
    recipe.write_text("fine: {ti_steps: 7}\n")
    out = tmp_path / "outputs"
    rows = _run(tmp_path, ["a"], folder, recipe=str(recipe))
    assert [r.status for r in rows] == ["ok"]
    assert "ti_steps 7" in (out / "notebooks" / "a" / "00_recipe.ipynb").read_text()

    recipe.write_text("fine: {ti_stepz: 7}\n")
    with pytest.raises(ConfigError, match="ti_stepz"):
        _run(tmp_path, ["b"], folder, recipe=str(recipe))
    assert not (out / "notebooks" / "b").exists()


def test_a_crashed_kernel_leaves_its_python_stack_in_a_log(tmp_path):
    folder = _one_notebook(tmp_path, "00_crash.ipynb", "import ctypes\ndef read_address_zero():\n"
                           "    ctypes.string_at(0)\nread_address_zero()")
    [row] = _run(tmp_path, ["a"], folder, kernel_retries=0)
    log = tmp_path / "outputs" / "notebooks" / "a" / "00_crash.log"
    assert row.status == "failed" and str(log) in row.message
    text = log.read_text()
    assert "Segmentation fault" in text and "read_address_zero" in text, text[-2000:]


def _dies_once(tmp_path):
    """A notebook whose kernel kills itself the first time it runs (marker file) and passes the second time."""
    marker = tmp_path / "died-once"
    body = (f"import os, pathlib, signal\nmarker = pathlib.Path({str(marker)!r})\n"
            "if not marker.exists():\n    marker.touch()\n    os.kill(os.getpid(), signal.SIGKILL)\n"
            "print('second attempt')")
    return _one_notebook(tmp_path, "00_flaky.ipynb", body)


def test_a_dead_kernel_is_started_again_loudly_and_its_log_kept(tmp_path):
    lines = []
    [row] = run_notebooks("demo", tmp_path, ["a"], tmp_path / "r", tmp_path / "c", tmp_path / "outputs",
                          folder=_dies_once(tmp_path), echo=lines.append)
    nb = tmp_path / "outputs" / "notebooks" / "a" / "00_flaky.ipynb"
    died = nb.with_suffix(".died1.log")
    [warning] = [line for line in lines if line.startswith("!! a 00_flaky")]
    assert "kernel died" in warning and str(died) in warning and "not expected" in warning
    assert row.status == "ok" and "died 1×" in row.message and str(died) in row.message
    assert "DeadKernelError" in died.read_text()
    assert died_logs(tmp_path / "outputs") == [died]
    assert "second attempt" in nb.read_text()
    assert not nb.with_suffix(".log").exists(), "an ok notebook has no failure log"


def test_without_retries_a_dead_kernel_fails_the_notebook(tmp_path):
    [row] = _run(tmp_path, ["a"], _dies_once(tmp_path), kernel_retries=0)
    assert row.status == "failed" and "DeadKernelError" in row.message and "started again" not in row.message


def test_an_error_in_a_cell_is_not_retried(tmp_path):
    counter = tmp_path / "runs"
    folder = _one_notebook(tmp_path, "00_error.ipynb", f"import pathlib\nrun = pathlib.Path({str(counter)!r})\n"
                           "run.write_text(run.read_text() + 'x' if run.exists() else 'x')\nraise ValueError('broken')")
    [row] = _run(tmp_path, ["a"], folder, kernel_retries=3)
    assert row.status == "failed" and "broken" in row.message
    assert counter.read_text() == "x", "the notebook ran once"


# the runner as `python -m styleblend notebooks` runs it, on the notebooks folder given first
RUNNER = ("import functools, pathlib, sys\n"
          "import styleblend.runners.notebooks as nb\n"
          "from styleblend.runners.cli import main\n"
          "nb.run_notebooks = functools.partial(nb.run_notebooks, folder=pathlib.Path(sys.argv[1]))\n"
          "sys.exit(main(sys.argv[2:]))")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_ends_the_runner_its_notebook_and_kernel_and_records_stopped(tmp_path, signum):
    started = tmp_path / "kernel-started"
    folder = _one_notebook(tmp_path, "00_sleeps.ipynb",
                           f"import pathlib, time\npathlib.Path({str(started)!r}).touch()\ntime.sleep(600)")
    (tmp_path / "data" / "a" / "images").mkdir(parents=True)
    out = tmp_path / "outputs"
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, str(folder), "notebooks", "--set", "demo", "--styles", "a",
                               "--data", str(tmp_path / "data"), "--results", str(tmp_path / "r"),
                               "--checkpoints", str(tmp_path / "c"), "--outputs", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tree = []
    try:
        deadline = time.monotonic() + 120
        while not started.exists():
            assert runner.poll() is None and time.monotonic() < deadline, runner.communicate()
            time.sleep(0.2)
        tree = psutil.Process(runner.pid).children(recursive=True)
        assert len(tree) >= 2, "papermill and its kernel"
        runner.send_signal(signum)
        _, err = runner.communicate(timeout=60)
        assert runner.returncode == 128 + signum, err
        assert err.startswith(f"stopped by {signal.Signals(signum).name}: a 00_sleeps is recorded as stopped")
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert not still_running(tree), "no papermill or kernel outlives the runner"
        with open(out / "reports" / "a.csv") as f:
            assert [(r["notebook"], r["status"]) for r in csv.DictReader(f)] == [("00_sleeps", "stopped")]
    finally:
        for proc in still_running(tree):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        if runner.poll() is None:
            runner.kill()
            runner.wait()


def test_a_style_another_run_holds_is_refused_naming_the_holder(tmp_path):
    folder = _one_notebook(tmp_path, "00_ok.ipynb", "print('ran')")
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with style_lock(StyleCheckpoint(tmp_path / "c", "demo", "a")):
        with pytest.raises(LockedError, match=f"style a of set demo .* in use by another run \\(pid {os.getpid()} "):
            _run(tmp_path, ["a"], folder)
    assert not (tmp_path / "outputs" / "notebooks" / "a").exists() and not (tmp_path / "outputs" / "reports").exists()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    assert [r.status for r in _run(tmp_path, ["a"], folder)] == ["ok"], "the lock is the run's only while it runs"


def test_another_model_or_recipe_runs_the_notebooks_again_and_the_report_names_the_images_model(tmp_path):
    """(issue: stale results) A notebook ok in the last report is skipped only for the same model and recipe,
    and the report's header names the model the images' manifest records, not the command line's."""
    import json

    folder = tmp_path / "nbs"
    folder.mkdir()
    _notebook(folder / "00_ok.ipynb", "print('style', style)")
    out, model = tmp_path / "outputs", tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text("{}")
    run = lambda **kw: run_notebooks("demo", tmp_path, ["a"], tmp_path / "r", tmp_path / "c", out,  # noqa: E731
                                     folder=folder, echo=lines.append, **kw)
    lines = []
    run()
    lines.clear()
    run()
    assert any(line.startswith("skip  a 00_ok") for line in lines)
    lines.clear()
    run(model=str(model))
    assert any(line.startswith("again a 00_ok") for line in lines), lines
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("seed: 5\n")
    lines.clear()
    run(model=str(model), recipe=str(recipe))
    assert any(line.startswith("again a 00_ok") for line in lines), lines

    made = {"set": "demo", "style": "a", "stages": {"generate": {"complete": True, "key": {
        "model": {"path": "/models/other-sd21", "fingerprint": "abc123"}}}}}
    (tmp_path / "r" / "demo" / "a").mkdir(parents=True)
    (tmp_path / "r" / "demo" / "a" / ".manifest.json").write_text(json.dumps(made))
    (model / "model_index.json").write_text('{"changed": 1}')
    run(model=str(model), recipe=str(recipe))
    header = (out / "report.md").read_text()
    assert "Images made with /models/other-sd21 [abc123]: style(s) a" in header
    assert f"Model: {model}" not in header
