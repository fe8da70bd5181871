"""Scale-out: one GPU per style (lock files), per-style reports joined by a merge, `make -jN` per-style jobs, and
the Slurm array script's per-task command."""
import csv
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from test_notebook_runner import _notebook

from styleblend.errors import ConfigError
from styleblend.runners.gpus import claim_gpu, parse_gpus
from styleblend.runners.notebooks import merge_reports, report_header, run_notebooks, unfinished
from styleblend.data import select_styles

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
MAKE_VARS = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "SET", "DATA", "STYLES", "GPUS", "MODEL", "OUTPUTS", "RESULTS",
             "CHECKPOINTS", "CUDA_VISIBLE_DEVICES", "STYLEBLEND_DEVICE")


def _env(**extra):
    """This environment without a calling make's flags or any run settings, plus ``extra``; make's Python is
    the one running the tests (``VENV``), wherever its virtual environment lives."""
    env = {k: v for k, v in os.environ.items() if k not in MAKE_VARS}
    return dict(env, VENV=sys.prefix, **extra)


def _commands(text):
    """Printed shell commands, continuation lines joined."""
    return [line.strip() for line in text.replace("\\\n", " ").splitlines() if line.strip()]


def test_parse_gpus():
    assert parse_gpus("0,1 3") == ["0", "1", "3"]
    assert parse_gpus("") == [] and parse_gpus(None) == []
    with pytest.raises(ConfigError, match="listed twice"):
        parse_gpus("0,0")
    with pytest.raises(ConfigError, match="0;rm"):
        parse_gpus("0;rm")


def test_claims_are_distinct_wait_when_all_are_busy_and_are_released(tmp_path):
    locks, gpus = tmp_path / "locks", ["0", "1"]
    waiting, got = threading.Event(), []

    def third():
        with claim_gpu(gpus, locks, poll=0.01, echo=lambda _: waiting.set()) as gpu:
            got.append(gpu)

    with claim_gpu(gpus, locks) as a, claim_gpu(gpus, locks) as b:  # separate descriptors, as separate jobs have
        assert (a, b) == ("0", "1")
        thread = threading.Thread(target=third)
        thread.start()
        assert waiting.wait(30) and got == [], "a third claimer waits while both GPUs are held"
    thread.join(30)
    assert got == ["0"], "it gets a GPU once one is released"
    with claim_gpu([], locks) as none:
        assert none is None, "no GPUS: nothing is pinned"


def test_a_claim_held_by_another_process_is_skipped_and_freed_when_it_dies(tmp_path):
    locks = tmp_path / "locks"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom styleblend.runners.gpus import claim_gpu\n"
         "with claim_gpu(['0', '1'], sys.argv[1]) as gpu:\n    print(gpu, flush=True)\n    sys.stdin.read()",
         str(locks)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "0"
        with claim_gpu(["0", "1"], locks) as mine:
            assert mine == "1"
    finally:
        holder.terminate()  # dies without leaving its `with` (SIGTERM; Jittor's SIGCHLD handler tolerates only that)
        holder.wait(30)
    with claim_gpu(["0", "1"], locks) as again:
        assert again == "0", "the operating system dropped the killed holder's lock"


@pytest.fixture
def rendezvous_notebook(tmp_path):
    """One notebook that waits until both styles' kernels run at once, then records the GPU it was given."""
    folder = tmp_path / "nbs"
    folder.mkdir()
    _notebook(folder / "00_gpu.ipynb", (
        "import os, time\nfrom pathlib import Path\nout = Path(output_root)\n"
        "(out / f'{style}.started').touch()\n"
        "for _ in range(600):\n"
        "    if all((out / f'{s}.started').exists() for s in ('a', 'b')):\n        break\n    time.sleep(0.1)\n"
        "assert os.environ['STYLEBLEND_DEVICE'] == 'cuda'\n"
        "(out / f'{style}.gpu').write_text(os.environ['CUDA_VISIBLE_DEVICES'])"))
    return folder


def test_parallel_styles_get_one_gpu_each_and_their_reports_merge(tmp_path, rendezvous_notebook):
    out = tmp_path / "outputs"
    results = {}

    def job(style):  # what one `make -jN` per-style job does: its style only, its own report, no merge
        results[style] = run_notebooks("demo", tmp_path, [style], tmp_path / "r", tmp_path / "c", out,
                                       folder=rendezvous_notebook, echo=lambda _: None, gpus=["3", "4"], merge=False)

    threads = [threading.Thread(target=job, args=(s,)) for s in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [r.status for s in ("a", "b") for r in results[s]] == ["ok", "ok"]
    assert {(out / f"{s}.gpu").read_text() for s in ("a", "b")} == {"3", "4"}, "each style saw exactly its own GPU"
    assert not (out / "report.csv").exists(), "per-style jobs never write the shared report"

    rows = merge_reports(out, report_header(None))
    with open(out / "report.csv") as f:
        assert sorted(r["style"] for r in csv.DictReader(f)) == ["a", "b"]
    assert "TINY" in (out / "report.md").read_text()
    assert unfinished(rows, ["a", "b"], rendezvous_notebook) == []
    assert unfinished(rows, ["a", "b", "c"], rendezvous_notebook) == ["c"], "a style that never ran is unfinished"

    lines = []  # resume: the same notebook would fail now (no GPU, no partner), so it must be skipped
    rows = run_notebooks("demo", tmp_path, ["a", "b"], tmp_path / "r", tmp_path / "c", out,
                         folder=rendezvous_notebook, echo=lines.append)
    assert sum(line.startswith("skip") for line in lines) == 2 and {r.status for r in rows} == {"ok"}


def test_make_runs_one_job_per_style_then_the_merge(tmp_path):
    for style in ("a", "b"):
        (tmp_path / style / "images").mkdir(parents=True)
    base = ["make", "-n", f"DATA={tmp_path}", "SET=x", f"OUTPUTS={tmp_path / 'out'}", "STYLES=a b"]
    done = subprocess.run(base + ["-j2", "reproduce", "GPUS=0,1"], cwd=ROOT, env=_env(), capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    commands = _commands(done.stdout)
    jobs = [c for c in commands if " notebooks " in c]
    assert [re.search(r"--styles (\S+)", c).group(1) for c in jobs] == ["a", "b"]
    assert all("--no-merge --gpus 0,1" in c for c in jobs)
    merges = [i for i, c in enumerate(commands) if " merge-reports " in c]
    assert len(merges) == 1 and merges[0] > commands.index(jobs[-1]), "one merge, after the per-style jobs"
    warmups = [i for i, c in enumerate(commands) if " warmup " in c]
    assert len(warmups) == 1 and warmups[0] < commands.index(jobs[0]), "one warmup, before any notebook"

    serial = subprocess.run(base + ["reproduce"], cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert [c for c in _commands(serial.stdout) if " notebooks " in c] == [j.replace(" --gpus 0,1", "") for j in jobs]

    recipe = subprocess.run(base + ["reproduce", "RECIPE=short.yaml"], cwd=ROOT, env=_env(), capture_output=True,
                            text=True)
    assert [" ".join(c.split()) for c in _commands(recipe.stdout) if " notebooks " in c] == [
        " ".join(j.replace(" --gpus 0,1", " --config short.yaml").split()) for j in jobs]


def test_slurm_task_runs_the_style_of_its_index_in_the_serial_order(tmp_path):
    serial = select_styles(DEMO, None)

    def task(i):
        return subprocess.run(["bash", "scripts/slurm/reproduce.sbatch"], cwd=ROOT, capture_output=True, text=True,
                              env=_env(SLURM_ARRAY_TASK_ID=str(i), SLURM_SUBMIT_DIR=str(ROOT), STYLEBLEND_DRY_RUN="1",
                                       SET="demo", DATA=str(DEMO), OUTPUTS=str(tmp_path), CUDA_VISIBLE_DEVICES="5"))

    for i in (0, 1):
        done = task(i)
        assert done.returncode == 0, done.stderr
        lines = _commands(done.stdout)
        assert lines[0] == f"task {i}: style {serial[i]}, STYLEBLEND_DEVICE=cuda CUDA_VISIBLE_DEVICES=5"
        command = next(line for line in lines if " notebooks " in line)
        assert lines.index(next(line for line in lines if " warmup " in line)) < lines.index(command)
        assert f"--set demo --data {DEMO}" in command and f"--outputs {tmp_path}" in command
        assert f"--styles {serial[i]} --no-merge" in command and "--gpus" not in command, "Slurm pins the GPU"
    listed = subprocess.run(["make", "-s", "--no-print-directory", "reproduce-list", "SET=demo"], cwd=ROOT,
                            env=_env(), capture_output=True, text=True)
    assert listed.stdout.split() == serial
    beyond = task(len(serial))
    assert beyond.returncode == 2 and f"only {len(serial)} styles" in beyond.stderr


@pytest.fixture
def scale_out_bench():
    """bench/scale_out.py as a module."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import scale_out
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return scale_out


def test_bench_pixel_difference_finds_the_largest_change_and_a_missing_image(tmp_path, scale_out_bench):
    pixel_difference = scale_out_bench.pixel_difference
    from PIL import Image
    import numpy as np

    image = np.full((4, 4, 3), 100, np.uint8)
    changed = image.copy()
    changed[1, 2, 0] = 98
    for folder, pixels in (("a", image), ("b", changed)):
        (tmp_path / folder / "B" / "00").mkdir(parents=True)
        Image.fromarray(pixels).save(tmp_path / folder / "B" / "00" / "Cup.png")
    assert pixel_difference(tmp_path / "a", tmp_path / "a") == {"max": 0, "share": 0.0}
    assert pixel_difference(tmp_path / "a", tmp_path / "b") == {"max": 2, "share": round(1 / 48, 5)}
    Image.fromarray(image).save(tmp_path / "a" / "B" / "00" / "Zoo.png")
    with pytest.raises(SystemExit, match="Zoo.png is missing"):
        pixel_difference(tmp_path / "a", tmp_path / "b")


def test_bench_counts_compiled_operators_and_times_cells(tmp_path, monkeypatch, scale_out_bench):
    import nbformat

    monkeypatch.setattr(scale_out_bench, "JITTOR_CACHE", tmp_path / "jittor")
    assert scale_out_bench.compiled_ops() == 0
    for folder, name in (("a/main/jit", "x_op.so"), ("a/main/jit", "y_op.so"), ("b/default/jit", "z_op.so")):
        (tmp_path / "jittor" / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / "jittor" / folder / name).touch()
    (tmp_path / "jittor" / "a" / "main" / "jit" / "x_op.cc").touch()
    assert scale_out_bench.compiled_ops() == 3, "only compiled operators (jit/*.so) count"

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# title"), nbformat.v4.new_code_cell("# load\nmodel = load()"),
                nbformat.v4.new_code_cell("train(model)"), nbformat.v4.new_code_cell("show()")]
    for cell, seconds in zip(nb.cells, (0.5, 2.0, 7.25, None)):  # an unexecuted cell has no duration
        cell.metadata["papermill"] = {"duration": seconds}
    nbformat.write(nb, tmp_path / "02_coarse_style.ipynb")
    assert scale_out_bench.cell_times(tmp_path) == [
        "02_coarse_style: cells 9.2 s; slowest 7.2 s `train(model)` | 2.0 s `model = load()`"]
