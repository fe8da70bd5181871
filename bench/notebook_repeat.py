"""One notebook run again and again in fresh kernels, to catch an intermittent crash (docs/performance.md,
scale-out: 02_coarse_style's kernel died now and then at real size, ≈ 25 s in, at its first sampling).

    python bench/notebook_repeat.py --data .device/B --style 00 --model /tmp/sd21-random \\
        --recipe bench/recipes/scale_out.yaml --notebook 02_coarse_style --runs 8

The notebooks up to and including ``--notebook`` run once (through the package's runner, as ``make reproduce``
does), then ``--notebook`` runs ``--runs`` more times; its training is then skipped (already trained), so each run
is the loading and sampling where the crash was seen. Every ``--eager-every``-th run sets Jittor's
``lazy_execution=0`` (each op runs when it is made, so a failure names the op that fails; 0: never). A dead kernel
is not started again (the runner's retry would hide the death). One JSON line per run: status, seconds, the error;
a failed run's log (kernel stderr included) is copied to ``--logs``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from styleblend.notebook_runner import notebooks, run_notebooks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--set", dest="set_name", default="B")
    p.add_argument("--style", required=True)
    p.add_argument("--model", default="")
    p.add_argument("--recipe", default="")
    p.add_argument("--notebook", default="02_coarse_style")
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--eager-every", type=int, default=2, help="every N-th run with lazy_execution=0; 0: never")
    p.add_argument("--logs", type=Path, default=Path(os.environ.get("OUT", ".")))
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="notebook_repeat_"))
    folder = work / "notebooks"
    chosen = [nb for nb in notebooks() if nb.stem <= a.notebook]
    if not chosen or chosen[-1].stem != a.notebook:
        raise SystemExit(f"no notebook {a.notebook} in {notebooks()[0].parent}")
    folder.mkdir()
    for nb in chosen:
        shutil.copy(nb, folder / nb.name)
    executed = work / "outputs" / "notebooks" / a.style / f"{a.notebook}.ipynb"
    for run in range(a.runs + 1):
        eager = a.eager_every > 0 and run > 0 and run % a.eager_every == 0
        os.environ["lazy_execution"] = "0" if eager else "1"
        executed.unlink(missing_ok=True)  # the runner skips a notebook only when its executed copy exists
        rows = run_notebooks(a.set_name, a.data, [a.style], work / "result", work / "checkpoints", work / "outputs",
                             model=a.model or None, folder=folder, recipe=a.recipe or None, echo=lambda *_: None,
                             kernel_retries=0)
        row = next((r for r in rows if r.notebook == a.notebook), None)
        if row is None:  # an earlier notebook failed
            raise SystemExit(f"stopped before {a.notebook}: " + "; ".join(f"{r.notebook} {r.status} {r.message}"
                                                                         for r in rows))
        if row.status != "ok":
            a.logs.mkdir(parents=True, exist_ok=True)
            shutil.copy(executed.with_suffix(".log"), a.logs / f"{a.notebook}_run{run}.log")
        print(json.dumps({"run": run, "lazy_execution": 0 if eager else 1, "notebook": a.notebook,
                          "status": row.status, "seconds": round(row.seconds, 1), "peak_gpu_mb": row.peak_gpu_mb,
                          "error": row.message[:300]}), flush=True)


if __name__ == "__main__":
    main()
