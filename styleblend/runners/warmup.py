"""``styleblend warmup`` (``make warmup``; the first step of ``make demo``, ``make reproduce`` and ``make test``).

Jittor compiles its core and each operator kernel the first time a process needs it. This compiles all of them
once per machine, in one plain process, so the notebooks' Jupyter kernels never compile on a normal run
(docs/first-run.md says why that matters). It runs the code cells of every numbered notebook here, with the
parameters ``make reproduce`` gives them and every file written to a temporary folder: at smoke sizes with the
run's own recipe, else with two steps of every loop (kernels depend on shapes and types, hardly on step counts;
a few values, such as those a short training reaches at its last step, can still differ at full size). A stamp in
Jittor's cache remembers what was warmed (machine, package code, model, recipe), so later runs skip it.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import yaml

from ..config import load_yaml
from ..errors import StyleBlendError
from ..run_context import model_name, smoke_mode
from .notebooks import NOTEBOOK_DIR, notebooks
from ..progress import progress

PACKAGE_DIR = Path(__file__).resolve().parents[1]
STAMP = "styleblend-warmup.json"  # in Jittor's cache folder: warmed key -> when
CORE_READY = "jittor core ready"
# Two steps of every loop: training steps and the sampling steps with and without attention injection.
FEW_STEPS = {"sdedit": {"steps": 2}, "coarse": {"steps": 2}, "fine": {"ti_steps": 2, "lora_steps": 2},
             "blend": {"steps": 2}}


@dataclass
class WarmupResult:
    skipped: bool
    seconds: float
    kernels_compiled: int


def notebook_source(path: Path, parameters: Dict[str, object]) -> str:
    """A notebook's code cells as one script, with ``parameters`` assigned right after the cell tagged
    ``parameters`` (as papermill does)."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    chunks = []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        chunks.append("".join(cell["source"]))
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            chunks.append("\n".join(f"{key} = {value!r}" for key, value in parameters.items()))
    return "\n\n".join(chunks)


def code_fingerprint(folder: Path = NOTEBOOK_DIR) -> str:
    """Hash of the package's Python files and the notebooks: new code may need new kernels."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")) + notebooks(folder):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def warm_key(model: Optional[str], recipe: Optional[str], folder: Path = NOTEBOOK_DIR) -> str:
    """What the compiled kernels depend on besides the machine: the code, the device, the model, the recipe."""
    recipe_text = Path(recipe).read_text(encoding="utf-8") if recipe else ""
    parts = [code_fingerprint(folder), os.environ.get("STYLEBLEND_DEVICE", "cpu"), model_name(model), recipe_text]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _warmup_recipe(model: Optional[str], recipe: Optional[str], folder: Path) -> str:
    """The recipe the warmup runs the notebooks with: at smoke sizes the run's own (already a few steps, and every
    value as the notebooks will see it, e.g. the step at which an exercise's training ends), else
    :func:`_few_steps_recipe`."""
    if smoke_mode(model):
        return str(Path(recipe).resolve()) if recipe else ""
    return str(_few_steps_recipe(recipe, folder))


def _few_steps_recipe(recipe: Optional[str], folder: Path) -> Path:
    """The user's recipe (if any) with two steps of every loop, as a file the notebooks can read."""
    data = (load_yaml(recipe) or {}) if recipe else {}
    for section, values in FEW_STEPS.items():
        data.setdefault(section, {}).update(values)
    path = folder / "warmup_recipe.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _jit_kernels(folder: Path) -> int:
    return len(list(folder.glob("*.so")))


def _read_stamp(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def warm(set_name: str, data_root, style: str, model: Optional[str] = None, recipe: Optional[str] = None,
         force: bool = False, folder: Path = NOTEBOOK_DIR, echo=print) -> WarmupResult:
    """Compile every kernel the notebooks need, unless this machine already did for the same key."""
    import jittor_utils  # finds Jittor's cache folder; compiles nothing

    cache = Path(jittor_utils.cache_path)
    stamp_path, key = cache / STAMP, warm_key(model, recipe, folder)
    stamps = _read_stamp(stamp_path)
    if key in stamps and not force:
        echo(f"warmup: Jittor's kernels are compiled (since {stamps[key]}); skipped")
        return WarmupResult(True, 0.0, 0)
    echo("warmup: compiling the Jittor kernels every notebook needs, once on this machine, outside Jupyter "
         "(about 5 minutes, on a 2-core CPU as on a GPU machine; later runs skip it)")
    start = time.perf_counter()
    compile_core(echo)
    from ..backend import jt

    kernels = Path(jt.compiler.cache_path) / "jit"  # with CUDA, a subfolder of the cache per CUDA version
    before = _jit_kernels(kernels)
    os.environ.setdefault("MPLBACKEND", "Agg")
    with tempfile.TemporaryDirectory(prefix="styleblend-warmup-") as tmp:
        tmp = Path(tmp)
        parameters = {"style": style, "set_name": set_name, "data_root": str(Path(data_root).resolve()),
                      "model": model or "", "recipe_file": _warmup_recipe(model, recipe, tmp),
                      "results_root": str(tmp / "result"), "checkpoints_root": str(tmp / "checkpoints"),
                      "output_root": str(tmp / "outputs")}
        bar = progress(notebooks(folder), desc="warmup", unit="notebook")
        with _quiet():  # the notebooks' own bars would break this one
            for path in bar:
                _run_code(path, parameters)
    seconds = time.perf_counter() - start
    compiled = _jit_kernels(kernels) - before
    stamps[key] = time.strftime("%Y-%m-%d %H:%M")
    stamp_path.write_text(json.dumps(stamps, indent=1), encoding="utf-8")
    echo(f"warmup: done in {seconds:.0f} s ({compiled} kernels compiled into {kernels})")
    return WarmupResult(False, seconds, compiled)


def compile_core(echo=print) -> None:
    """Import Jittor in a child process, which compiles its core on a new machine. When Jittor finds its compiler
    helper (jit_utils_core) out of date — after ``make gpu-setup`` changed its flags, say — it rebuilds it and
    ends the process with status 0 and no word; a second import then works."""
    for _ in range(2):
        child = subprocess.run([sys.executable, "-c", f"import styleblend.backend; print({CORE_READY!r})"],
                               stdout=subprocess.PIPE, text=True)
        if child.returncode != 0:
            raise StyleBlendError(f"warmup: importing Jittor failed (exit {child.returncode}); see the lines above")
        if CORE_READY in child.stdout:
            return
        echo("warmup: Jittor rebuilt its compiler helper and stopped; importing it again")
    raise StyleBlendError("warmup: Jittor stopped twice while importing; run `python -c 'import styleblend.backend'` "
                          "with log_silent=0 to see why")


@contextlib.contextmanager
def _quiet():
    previous = os.environ.get("STYLEBLEND_QUIET")
    os.environ["STYLEBLEND_QUIET"] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["STYLEBLEND_QUIET"]
        else:
            os.environ["STYLEBLEND_QUIET"] = previous


def _run_code(path: Path, parameters: Dict[str, object]) -> None:
    """Run one notebook's code in a fresh namespace, from the notebooks folder, its printing discarded."""
    source = notebook_source(path, parameters)
    cwd = os.getcwd()
    try:
        os.chdir(path.parent)
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(source, str(path), "exec"), {"__name__": "__warmup__"})
    except Exception as exc:
        raise StyleBlendError(f"warmup: {path.name} failed ({type(exc).__name__}: {exc}); run the notebook "
                              f"itself to see the cell") from exc
    finally:
        os.chdir(cwd)
