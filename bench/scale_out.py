"""Scale-out: the same styles through `make reproduce` on one GPU, then with `make -jN` on N GPUs; wall time,
speed-up (target 0.9·N) and how far their images differ. Prints one JSON line.

    python bench/scale_out.py --data data/B --styles 00 01 --gpus 0,1                         # smoke recipe, tiny model
    python bench/scale_out.py --data data/B --styles 00 01 --gpus 0,1 --model /tmp/sd21-random \\
        --recipe bench/recipes/scale_out.yaml                                                  # reduced real size
Each style gets the first --prompts prompts of its prompt.json (fewer images, same work per image). --warmup
first runs one style untimed, so Jittor's one-off operator compilation counts in neither run; its images are also
the noise floor: the same style, same seeds, same GPU, run twice (warm-up vs serial) differ by GPU kernels'
run-to-run nondeterminism alone. ``same_images`` holds when serial and parallel differ by no more than that.
--gpus "" runs both without pinning (a CPU check of the plumbing; no speed-up to expect there).
``compiled_ops`` counts the operators Jittor compiled during each timed run (none, when the warm-up covered them),
and the log lists where the first style's serial notebooks spend their time, cell by cell.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from unet_step import gpu_name

from styleblend.runners.notebooks import died_logs

ROOT = Path(__file__).resolve().parents[1]
JITTOR_CACHE = Path.home() / ".cache" / "jittor"  # Jittor's default home: each compiled operator is a jit/*.so


def trimmed_set(source: Path, styles, prompts: int, dest: Path) -> Path:
    """``dest/<style>/``: the style's images and its first ``prompts`` prompts."""
    for style in styles:
        shutil.copytree(source / style / "images", dest / style / "images", dirs_exist_ok=True)
        table = json.loads((source / style / "prompt.json").read_text())
        (dest / style / "prompt.json").write_text(json.dumps(dict(list(table.items())[:prompts]), indent=1))
    return dest


def make_reproduce(work: Path, set_name: str, data: Path, styles, gpus: str, jobs: int, model: str,
                   recipe: str) -> float:
    """Seconds of one `make -j<jobs> reproduce` into ``work``; raises if a style failed."""
    cmd = ["make", f"-j{jobs}", "--no-print-directory", "reproduce", f"PY={sys.executable}", f"SET={set_name}",
           f"DATA={data}", f"STYLES={' '.join(styles)}", f"GPUS={gpus}", f"OUTPUTS={work / 'outputs'}",
           f"RESULTS={work / 'result'}", f"CHECKPOINTS={work / 'checkpoints'}", f"MODEL={model}", f"RECIPE={recipe}"]
    start, output = time.perf_counter(), []
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    for line in proc.stdout:  # the runner's line per notebook as it ends: its time, peak RAM, any kernel death
        output.append(line)
        if line.startswith(("ok", "failed")):  # clock time: a run cut short still shows how far it got
            print(f"{time.strftime('%H:%M:%S')} {work.name}: {line.rstrip()}", file=sys.stderr)
    code = proc.wait()
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{''.join(output)[-6000:]}")
    print(f"{work.name}: {len(styles)} style(s) on GPUs [{gpus}] with -j{jobs} in {seconds:.1f} s", file=sys.stderr)
    return seconds


def compiled_ops() -> int:
    """Operators Jittor has compiled on this machine so far (its cache's ``jit/*.so`` files)."""
    return sum(1 for _ in JITTOR_CACHE.glob("**/jit/*.so"))


def cell_times(notebooks: Path, slowest: int = 2) -> list:
    """Per executed notebook in ``notebooks``: its cells' total seconds and its slowest cells (papermill's
    per-cell durations; the rest of a notebook's time is the kernel's start and end)."""
    lines = []
    for path in sorted(notebooks.glob("*.ipynb")):
        cells = [(c["metadata"].get("papermill", {}).get("duration") or 0.0, c) for c in
                 json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        top = sorted(cells, key=lambda item: -item[0])[:slowest]
        named = " | ".join(f"{t:.1f} s `{_first_statement(c)}`" for t, c in top)
        lines.append(f"{path.stem}: cells {sum(t for t, _ in cells):.1f} s; slowest {named}")
    return lines


def _first_statement(cell) -> str:
    source = "".join(cell["source"]).splitlines()
    return next((line.strip() for line in source if line.strip() and not line.lstrip().startswith("#")), "")[:70]


def image_hashes(results: Path) -> dict:
    return {str(p.relative_to(results)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(results.rglob("*.png"))}


def pixel_difference(a: Path, b: Path) -> dict:
    """Largest absolute pixel difference (0–255) and the share of differing pixel values over the images both
    result folders hold; raises if ``b`` lacks an image of ``a``."""
    worst, differing, total = 0, 0, 0
    for p in sorted(a.rglob("*.png")):
        q = b / p.relative_to(a)
        if not q.exists():
            raise SystemExit(f"{q} is missing (it is in {a})")
        d = np.abs(np.asarray(Image.open(p), np.int16) - np.asarray(Image.open(q), np.int16))
        worst, differing, total = max(worst, int(d.max())), differing + int((d > 0).sum()), total + d.size
    return {"max": worst, "share": round(differing / max(total, 1), 5)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="a style set: <style>/images, <style>/prompt.json")
    p.add_argument("--set", dest="set_name", default="B", help="the set's name (its per-style blend settings)")
    p.add_argument("--styles", nargs="+", required=True)
    p.add_argument("--gpus", required=True, help='GPU ids for the parallel run, e.g. 0,1 ("" = no pinning)')
    p.add_argument("--model", default="", help='"" = the tiny model (smoke recipe)')
    p.add_argument("--recipe", default="", help="a recipe YAML laid over the defaults")
    p.add_argument("--prompts", type=int, default=5)
    p.add_argument("--warmup", action="store_true")
    p.add_argument("--work", type=Path, default=Path("/tmp/scale_out"))
    a = p.parse_args()
    gpus = [g for g in a.gpus.split(",") if g]
    n = len(gpus) or 2
    if a.work.exists():
        raise SystemExit(f"{a.work} exists; choose another --work (nothing is overwritten)")
    data = trimmed_set(a.data, a.styles, a.prompts, a.work / "data")
    run = dict(set_name=a.set_name, data=data, model=a.model, recipe=a.recipe)
    if a.warmup:
        make_reproduce(a.work / "warmup", styles=a.styles[:1], gpus=",".join(gpus[:1]), jobs=1, **run)
    before_serial = compiled_ops()
    serial = make_reproduce(a.work / "serial", styles=a.styles, gpus=",".join(gpus[:1]), jobs=1, **run)
    after_serial = compiled_ops()
    for line in cell_times(a.work / "serial" / "outputs" / "notebooks" / a.styles[0]):
        print(f"serial {a.styles[0]} {line}", file=sys.stderr)
    parallel = make_reproduce(a.work / "parallel", styles=a.styles, gpus=",".join(gpus), jobs=n, **run)
    compiled = {"serial": after_serial - before_serial, "parallel": compiled_ops() - after_serial}
    recipe = a.recipe or ("smoke" if not a.model else "full")
    serial_images = image_hashes(a.work / "serial" / "result")
    across = pixel_difference(a.work / "serial" / "result", a.work / "parallel" / "result")
    line = {"card": gpu_name() if gpus else "cpu", "gpus": len(gpus), "styles": a.styles, "prompts": a.prompts,
            "model": a.model or "tiny", "recipe": recipe, "serial_s": round(serial, 1),
            "parallel_s": round(parallel, 1), "speedup": round(serial / parallel, 2), "target": round(0.9 * n, 2),
            "images": len(serial_images),
            "identical_images": serial_images == image_hashes(a.work / "parallel" / "result"),
            "serial_vs_parallel": across,
            "kernel_deaths": {run: len(died_logs(a.work / run / "outputs")) for run in ("serial", "parallel")},
            "compiled_ops": compiled}
    if a.warmup:
        repeat = pixel_difference(a.work / "warmup" / "result", a.work / "serial" / "result")
        line.update(repeat_same_gpu=repeat, same_images=across["max"] <= repeat["max"])
    print(json.dumps(line))


if __name__ == "__main__":
    main()
