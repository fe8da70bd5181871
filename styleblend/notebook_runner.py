"""``make reproduce``: run the numbered notebooks with papermill for each style, and write a run report.

Each notebook runs in its own papermill process; the report records its time, the peak memory of its process
tree (kernel included) and its status. A failing notebook stops that style (its executed copy is kept, with
the error in it), other styles go on, and a re-run skips what the report already lists as ``ok``.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import psutil

from .memory import gpu_used_mb

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
REPORT_FIELDS = ["notebook", "style", "seconds", "peak_ram_mb", "peak_gpu_mb", "status", "message"]
TINY_MODEL_BANNER = ("!! No MODEL given: running the embedded TINY model with RANDOM weights at smoke sizes.\n"
                     "!! The images prove the pipeline runs; they are not from a trained Stable Diffusion.")


@dataclass
class ReportRow:
    notebook: str
    style: str
    seconds: float
    peak_ram_mb: float
    peak_gpu_mb: Optional[float]
    status: str
    message: str = ""


def notebooks(folder: Path = NOTEBOOK_DIR) -> List[Path]:
    """The numbered notebooks (``00_…`` to ``06_…``) in order."""
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


class PeakMemory:
    """Samples the RAM of a process tree (and the GPU's used memory) until stopped; keeps the peaks."""

    def __init__(self, pid: int, every: float = 0.5):
        self.pid, self.every = pid, every
        self.ram_mb, self.gpu_mb = 0.0, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root] + root.children(recursive=True)
                rss = sum(p.memory_info().rss for p in procs if p.is_running())
                self.ram_mb = max(self.ram_mb, rss / 2**20)
            except psutil.Error:
                pass
            gpu = gpu_used_mb()
            if gpu is not None:
                self.gpu_mb = max(self.gpu_mb or 0.0, gpu)
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def read_report(path: Path) -> Dict[tuple, ReportRow]:
    """Rows of an earlier run's report by (style, notebook); empty when there is none."""
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        rows = [ReportRow(**{k: r[k] for k in REPORT_FIELDS}) for r in csv.DictReader(f)]
    return {(r.style, r.notebook): r for r in rows}


def write_report(rows: Sequence[ReportRow], outputs: Path, header: str) -> None:
    """``outputs/report.csv`` and ``outputs/report.md``."""
    outputs.mkdir(parents=True, exist_ok=True)
    with open(outputs / "report.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=REPORT_FIELDS)
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    lines = [f"# Run report\n\n{header}\n", "| notebook | style | seconds | peak RAM (MiB) | peak GPU (MiB) | status |",
             "|---|---|---:|---:|---:|---|"]
    for r in rows:
        gpu = "" if r.peak_gpu_mb in (None, "") else f"{float(r.peak_gpu_mb):.0f}"
        status = r.status if not r.message else f"{r.status}: {r.message}"
        lines.append(f"| {r.notebook} | {r.style} | {float(r.seconds):.1f} | {float(r.peak_ram_mb):.0f} | {gpu} | {status} |")
    (outputs / "report.md").write_text("\n".join(lines) + "\n")


def run_one(notebook: Path, out: Path, parameters: Dict[str, object], env: Dict[str, str]) -> ReportRow:
    """Execute one notebook with papermill in a child process, measuring time and peak memory."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "papermill", str(notebook), str(out), "--cwd", str(notebook.parent),
           "--no-progress-bar", "--log-level", "WARNING"]
    for key, value in parameters.items():
        cmd += ["-p", key, str(value)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with PeakMemory(proc.pid) as peak:
        log, _ = proc.communicate()
    status = "ok" if proc.returncode == 0 else "failed"
    message = "" if status == "ok" else _last_error(log, out)
    return ReportRow(notebook.stem, str(parameters["style"]), time.perf_counter() - start, peak.ram_mb,
                     peak.gpu_mb, status, message)


def _last_error(log: str, out: Path) -> str:
    lines = [l.strip() for l in log.splitlines() if l.strip()]
    error = next((l for l in reversed(lines) if "Error" in l or "Exception" in l), lines[-1] if lines else "")
    return f"{error[:200]} (executed notebook kept: {out})"


def run_notebooks(set_name: str, data_root, styles: Sequence[str], results_root, checkpoints_root, outputs,
                  model: Optional[str] = None, folder: Path = NOTEBOOK_DIR, echo=print) -> List[ReportRow]:
    """Run 00→06 for each style; write the report after every notebook so an interruption loses nothing."""
    outputs = Path(outputs).resolve()
    tiny = not model
    env = dict(os.environ, STYLEBLEND_QUIET="1", **({"STYLEBLEND_SMOKE": "1"} if tiny else {}))
    header = TINY_MODEL_BANNER if tiny else f"Model: {model}"
    if tiny:
        echo(TINY_MODEL_BANNER)
    done = read_report(outputs / "report.csv")
    rows: Dict[tuple, ReportRow] = dict(done)
    for style in styles:
        for nb in notebooks(folder):
            key = (style, nb.stem)
            out = outputs / "notebooks" / style / nb.name
            if key in done and done[key].status == "ok" and out.exists():
                echo(f"skip  {style} {nb.stem} (ok in the last report)")
                continue
            params = {"style": style, "set_name": set_name, "data_root": Path(data_root).resolve(),
                      "results_root": Path(results_root).resolve(), "checkpoints_root": Path(checkpoints_root).resolve(),
                      "output_root": outputs, "model": model or ""}
            row = run_one(nb, out, params, env)
            rows[key] = row
            write_report(list(rows.values()), outputs, header)
            echo(f"{row.status:5s} {style} {nb.stem}: {row.seconds:.1f} s, peak RAM {row.peak_ram_mb:.0f} MiB"
                 + (f" — {row.message}" if row.message else ""))
            if row.status != "ok":
                echo(f"style {style} stopped at {nb.stem}; the other styles continue")
                break
    echo(f"report: {outputs / 'report.md'}")
    return list(rows.values())
