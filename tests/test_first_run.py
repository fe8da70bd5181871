"""A new machine's first run, as a newcomer has it: an empty Jittor cache, ``styleblend warmup``, then the notebooks.

Jittor compiles its core and kernels on first use; compiling inside a notebook kernel lost kernels on new
machines (docs/first-run.md). These tests use a cache folder of their own (Jittor's ``cache_name``), so they
compile everything from nothing whatever the machine has cached, and they remove it afterwards.
"""
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from styleblend.runners.notebooks import died_logs, notebooks, run_notebooks
from styleblend.runners.warmup import STAMP

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"


@pytest.fixture(scope="module")
def empty_cache():
    """An environment whose Jittor cache folder is new and empty; yields (env, cache folder)."""
    env = dict(os.environ, cache_name=f"first-run-{uuid.uuid4().hex[:8]}", STYLEBLEND_QUIET="1")
    env.pop("STYLEBLEND_SMOKE", None)
    cache = subprocess.run([sys.executable, "-c", "import jittor_utils; print(jittor_utils.cache_path)"], env=env,
                           capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    assert not list(Path(cache).glob("*.so")), f"{cache} should start empty"
    yield env, Path(cache)
    shutil.rmtree(cache, ignore_errors=True)


def _kernels(cache: Path) -> set:
    return {p.name for p in (cache / "jit").glob("*.so")}


def _warmup(env, *extra):
    return subprocess.run([sys.executable, "-m", "styleblend", "warmup", "--set", "demo", "--data", str(DEMO),
                           "--styles", "dots", *extra], env=env, capture_output=True, text=True, cwd=REPO)


def test_warmup_then_notebooks_compile_nothing_in_a_kernel(empty_cache, tmp_path, monkeypatch):
    env, cache = empty_cache
    warm = _warmup(env)
    assert warm.returncode == 0, warm.stdout + warm.stderr
    assert list(cache.glob("jittor_core*.so")), warm.stdout + warm.stderr
    assert (cache / STAMP).is_file()
    compiled = _kernels(cache)
    assert len(compiled) > 50, f"the warmup compiled only {len(compiled)} kernels"

    again = _warmup(env)  # a second run skips: the stamp matches
    assert again.returncode == 0 and "skipped" in again.stdout, again.stdout + again.stderr

    for key, value in env.items():  # the runner starts papermill with this process's environment
        monkeypatch.setenv(key, value)
    rows = run_notebooks("demo", DEMO, ["dots"], tmp_path / "result", tmp_path / "checkpoints", tmp_path / "outputs",
                         echo=lambda line: None, kernel_retries=0)
    assert [(r.notebook, r.status) for r in rows] == [(nb.stem, "ok") for nb in notebooks()], rows
    assert not died_logs(tmp_path / "outputs")
    assert _kernels(cache) == compiled, f"notebooks compiled {sorted(_kernels(cache) - compiled)}"


def test_warmup_runs_each_notebook_with_the_runner_parameters_after_its_parameters_cell():
    from styleblend.runners.warmup import notebook_source

    source = notebook_source(notebooks()[0], {"style": "dots", "set_name": "demo"})
    params_cell = source.index('style = "stripes"')
    assert source.index("style = 'dots'") > params_cell and source.index("set_name = 'demo'") > params_cell
    assert source.index("style = 'dots'") < source.index("open_notebook(")


def test_the_warmup_stamp_changes_with_what_the_kernels_depend_on(tmp_path, monkeypatch):
    from styleblend.runners.warmup import warm_key

    recipe = tmp_path / "r.yaml"
    recipe.write_text("precision: float16\n")
    keys = {warm_key(None, None), warm_key("/models/sd21", None), warm_key(None, str(recipe))}
    monkeypatch.setenv("STYLEBLEND_DEVICE", "cuda")
    keys.add(warm_key(None, None))
    assert len(keys) == 4
    assert warm_key(None, str(recipe)) == warm_key(None, str(recipe))
