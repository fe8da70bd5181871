"""``make reproduce``: run the numbered notebooks with papermill for each style, and write a run report.

Each notebook runs in its own papermill process; the report records its time, the peak memory of its process
tree (kernel included) and its status. A notebook whose kernel died (which should not happen; it is reported
loudly) is started once more; a failing notebook
stops that style (its executed copy is kept, with the error in it), other styles go on, and a re-run skips what
the report already lists as ``ok``.

Each style has its own report, ``outputs/reports/<style>.csv``, so styles run in parallel (``make -jN``, Slurm
array tasks) never write the same file; :func:`merge_reports` joins them into ``outputs/report.md`` + ``.csv``.
With GPUs given, each style holds one free GPU (:mod:`styleblend.runners.gpus`) and its processes see only that one.
Each style is run under its folder's lock (:func:`styleblend.locks.style_lock`), so a second runner on the same
style stops at once with a :class:`~styleblend.locks.LockedError` naming the first.

SIGINT (Ctrl-C) and SIGTERM stop the runner cleanly: the running notebook's papermill process and its whole process
tree (the Jupyter kernel included) are ended, its row is recorded as ``stopped`` (a re-run does it again), and
a :class:`~styleblend.runners.signals.Stopped` is raised; the command line prints one line and exits 130 or 143,
as a shell would.
"""
from __future__ import annotations

import csv
import functools
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import psutil

from .gpus import claim_gpu, gpu_env
from .signals import Stopped, stop_on_signals
from ..io import write_atomic
from ..locks import style_lock
from ..manifest import recorded_models, run_digest
from ..memory import gpu_used_mb
from ..run_context import REPO_ROOT, banner, model_name, run_recipe, smoke_mode

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
GPU_LOCKS = ".gpu-locks"  # outputs/.gpu-locks/<id>.lock: who holds which GPU
REPORT_FIELDS = ["notebook", "style", "seconds", "peak_ram_mb", "peak_gpu_mb", "status", "message", "run"]
# A safety net, not a cure: a notebook whose kernel died is run again this many times, saying so loudly (kernels
# died when Jittor compiled inside them: docs/first-run.md); errors in cells are not retried.
KERNEL_RETRIES = 1
KERNEL_DIED = "DeadKernelError"  # what papermill (nbclient) reports when the kernel process is gone
DIED_LOG = ".died{}.log"  # <notebook>.died<N>.log: the log of a notebook's N-th attempt whose kernel died
STOP_GRACE = 5.0  # seconds a stopped notebook's processes get to exit after SIGTERM, before SIGKILL
STOPPED = "stopped"  # the status of a notebook the runner was stopped in (not ok: a re-run does it again)


def _stop_tree(pid: int, grace: float = STOP_GRACE) -> None:
    """End ``pid`` and every process under it (papermill's Jupyter kernel is its child): SIGTERM, then SIGKILL to
    what is left after ``grace`` seconds. The tree is listed first, as an orphaned kernel would leave it."""
    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True) + [root]
    except psutil.NoSuchProcess:
        return
    for action in ("terminate", "kill"):
        for proc in procs:
            try:
                getattr(proc, action)()
            except psutil.NoSuchProcess:
                pass
        deadline = time.monotonic() + grace
        while procs and time.monotonic() < deadline:
            time.sleep(0.05)
            procs = still_running(procs)
        if not procs:
            return


def still_running(procs: Iterable[psutil.Process]) -> List[psutil.Process]:
    """The processes still running; a zombie has ended (it only waits for its parent or init to reap it)."""
    running = []
    for proc in procs:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                running.append(proc)
        except psutil.NoSuchProcess:
            pass
    return running


@dataclass
class ReportRow:
    notebook: str
    style: str
    seconds: float
    peak_ram_mb: float
    peak_gpu_mb: Optional[float]
    status: str
    message: str = ""
    run: str = ""  # manifest.run_digest of the model and recipe: an ok row counts only for the same run


def notebooks(folder: Path = NOTEBOOK_DIR) -> List[Path]:
    """The numbered notebooks (``00_…`` to ``06_…``) in order."""
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


class PeakMemory:
    """Samples the RAM of a process tree (and the GPU's used memory) until stopped; keeps the peaks."""

    def __init__(self, pid: int, gpu: Optional[str] = None, every: float = 0.5):
        self.pid, self.gpu, self.every = pid, gpu, every
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
            gpu = gpu_used_mb(self.gpu)
            if gpu is not None:
                self.gpu_mb = max(self.gpu_mb or 0.0, gpu)
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def report_header(model: Optional[str], results_root=None, set_name: str = "", styles: Sequence[str] = ()) -> str:
    """The report's first lines: the embedded model's warning when no model was given, then the model each style's
    images were made with as their manifests record it (:mod:`styleblend.manifest`), or, before any, the model
    given."""
    made = recorded_models(results_root, set_name, styles) if results_root is not None else {}
    lines = [banner(model)] if banner(model) else []
    lines += [f"Images made with {name}: style(s) {', '.join(found)}" for name, found in made.items()]
    if model and not made:
        lines.append(f"Model: {model}")
    return "\n".join(lines)


def style_report(outputs, style: str) -> Path:
    """One style's own report, written only by the job running that style."""
    return Path(outputs) / "reports" / f"{style}.csv"


def read_report(path: Path) -> Dict[tuple, ReportRow]:
    """Rows of an earlier run's report by (style, notebook); empty when there is none."""
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        rows = [ReportRow(**{k: r.get(k) or "" for k in REPORT_FIELDS}) for r in csv.DictReader(f)]
    return {(r.style, r.notebook): r for r in rows}


def _write_csv(rows: Iterable[ReportRow], path: Path) -> None:
    def write(tmp: Path):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=REPORT_FIELDS)
            writer.writeheader()
            writer.writerows(asdict(r) for r in rows)

    write_atomic(path, write, overwrite=True)


def write_report(rows: Sequence[ReportRow], outputs: Path, header: str) -> None:
    """``outputs/report.csv`` and ``outputs/report.md``."""
    _write_csv(rows, outputs / "report.csv")
    lines = [f"# Run report\n\n{header}\n", "| notebook | style | seconds | peak RAM (MiB) | peak GPU (MiB) | status |",
             "|---|---|---:|---:|---:|---|"]
    for r in rows:
        gpu = "" if r.peak_gpu_mb in (None, "") else f"{float(r.peak_gpu_mb):.0f}"
        status = r.status if not r.message else f"{r.status}: {r.message}"
        lines.append(f"| {r.notebook} | {r.style} | {float(r.seconds):.1f} | {float(r.peak_ram_mb):.0f} | {gpu} "
                     f"| {status} |")
    text = "\n".join(lines) + "\n"
    write_atomic(outputs / "report.md", lambda tmp: tmp.write_text(text), overwrite=True)


def merge_reports(outputs, header: str) -> List[ReportRow]:
    """Join every per-style report (``outputs/reports/*.csv``) into ``outputs/report.md`` + ``.csv``; all rows."""
    outputs = Path(outputs)
    paths = sorted((outputs / "reports").glob("[!.]*.csv"))  # not a writer's hidden temporary file
    rows = [row for path in paths for row in read_report(path).values()]
    write_report(rows, outputs, header)
    return rows


def unfinished(rows: Iterable[ReportRow], styles: Sequence[str], folder: Path = NOTEBOOK_DIR) -> List[str]:
    """The styles of ``styles`` that lack an ``ok`` row for some notebook (failed, stopped or never run)."""
    ok = {(r.style, r.notebook) for r in rows if r.status == "ok"}
    return [s for s in styles if any((s, nb.stem) not in ok for nb in notebooks(folder))]


def run_one(notebook: Path, out: Path, parameters: Dict[str, object], env: Dict[str, str],
            kernel_retries: int = KERNEL_RETRIES, echo=print) -> ReportRow:
    """Execute one notebook with papermill in a child process, measuring time and peak memory.

    A kernel that dies (the process vanishes, e.g. a crash inside Jittor) is started again up to
    ``kernel_retries`` times; each dead attempt's log is kept as ``<notebook>.died<N>.log``. An error raised in a
    cell is not retried. The row's time and peaks cover every attempt.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "papermill", str(notebook), str(out), "--cwd", str(notebook.parent),
           "--no-progress-bar", "--log-level", "WARNING"]
    for key, value in parameters.items():
        cmd += ["-r", key, str(value)]  # -r: raw strings (with -p, papermill would turn style "05" into 5)
    start, ram_mb, gpu_mb, died = time.perf_counter(), 0.0, None, []
    while True:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            with PeakMemory(proc.pid, env.get("CUDA_VISIBLE_DEVICES")) as peak:
                log, _ = proc.communicate()
        except BaseException:  # stopped (Stopped, Ctrl-C) or broken: no papermill or kernel may outlive the runner
            _stop_tree(proc.pid)
            proc.wait()
            raise
        ram_mb = max(ram_mb, peak.ram_mb)
        gpu_mb = peak.gpu_mb if gpu_mb is None else max(gpu_mb, peak.gpu_mb or 0.0)
        if proc.returncode == 0 or KERNEL_DIED not in log or len(died) >= kernel_retries:
            break
        died.append(out.with_suffix(DIED_LOG.format(len(died) + 1)))
        write_atomic(died[-1], lambda tmp: tmp.write_text(log), overwrite=True)
        echo(f"!! {parameters['style']} {notebook.stem}: the Jupyter kernel died (its log: {died[-1]}); starting the "
             f"notebook again. This is not expected: please report it with that log.")
    status = "ok" if proc.returncode == 0 else "failed"
    logs = ", ".join(map(str, died))
    messages = [f"the kernel died {len(died)}× and was started again (logs: {logs})"] if died else []
    if status == "failed":  # papermill's output, the kernel's stderr included, kept beside the executed notebook
        write_atomic(out.with_suffix(".log"), lambda tmp: tmp.write_text(log), overwrite=True)
        messages.append(_last_error(log, out))
    return ReportRow(notebook.stem, str(parameters["style"]), time.perf_counter() - start, ram_mb, gpu_mb, status,
                     "; ".join(messages))


def died_logs(folder: Path) -> List[Path]:
    """The logs of every dead kernel that was started again, under ``folder`` (e.g. ``outputs/notebooks``)."""
    return sorted(Path(folder).rglob("*" + DIED_LOG.format("*")))


def _last_error(log: str, out: Path) -> str:
    lines = [l.strip() for l in log.splitlines() if l.strip()]
    error = next((l for l in reversed(lines) if "Error" in l or "Exception" in l), lines[-1] if lines else "")
    return f"{error[:200]} (executed notebook kept: {out}; its log: {out.with_suffix('.log')})"


def _run_style(style: str, folder: Path, outputs: Path, params: Dict[str, object], env: Dict[str, str],
               gpus: Sequence[str], merge: bool, header, kernel_retries: int, run: str, echo) -> List[ReportRow]:
    """One style's notebooks, resuming from its report (rows of the same ``run`` only); its rows. A
    :class:`Stopped` run is recorded, then raised. ``header()``: the merged report's header."""
    report = style_report(outputs, style)
    rows = read_report(report)
    todo = []
    for nb in notebooks(folder):
        done = rows.get((style, nb.stem))
        if done is not None and done.status == "ok" and (outputs / "notebooks" / style / nb.name).exists():
            if done.run == run:
                echo(f"skip  {style} {nb.stem} (ok in the last report)")
                continue
            echo(f"again {style} {nb.stem}: the last report's run had another model or recipe")
        todo.append(nb)
    with claim_gpu(gpus if todo else (), outputs / GPU_LOCKS, echo=echo) as gpu:  # a finished style needs none
        if gpu is not None:
            echo(f"style {style} on GPU {gpu} (CUDA_VISIBLE_DEVICES={gpu})")
        for nb in todo:
            start, stop = time.perf_counter(), None
            try:
                row = run_one(nb, outputs / "notebooks" / style / nb.name, params, gpu_env(env, gpu), kernel_retries,
                              echo)
                row.run = run
            except Stopped as err:
                stop, row = err, ReportRow(nb.stem, style, time.perf_counter() - start, 0.0, None, STOPPED, str(err))
            rows[(style, nb.stem)] = row
            _write_csv(rows.values(), report)
            if merge:
                merge_reports(outputs, header())
            if stop is not None:
                raise Stopped(stop.signum, f"{stop}: {style} {nb.stem} is recorded as {STOPPED} in {report}; a re-run "
                              "starts it again")
            echo(f"{row.status:5s} {style} {nb.stem}: {row.seconds:.1f} s, peak RAM {row.peak_ram_mb:.0f} MiB"
                 + (f" — {row.message}" if row.message else ""))
            if row.status != "ok":
                echo(f"style {style} stopped at {nb.stem}; the other styles continue")
                break
    return list(rows.values())


def run_notebooks(set_name: str, data_root, styles: Sequence[str], results_root, checkpoints_root, outputs,
                  model: Optional[str] = None, folder: Path = NOTEBOOK_DIR, echo=print, gpus: Sequence[str] = (),
                  merge: bool = True, recipe: Optional[str] = None,
                  kernel_retries: int = KERNEL_RETRIES) -> List[ReportRow]:
    """Run 00→06 for each style, on a free GPU of ``gpus`` if any; returns these styles' rows.

    ``recipe``: a recipe YAML that every notebook lays over the defaults (its ``recipe_file`` parameter).
    ``kernel_retries``: how often a notebook whose kernel died is started again (see :func:`run_one`).

    A style's report is rewritten after every notebook, so an interruption loses nothing; ``merge`` rewrites the
    joined report each time too (parallel jobs leave that to one :func:`merge_reports` at the end). A style locked
    by another run raises :class:`~styleblend.locks.LockedError` before anything of it runs; SIGINT or SIGTERM
    raise :class:`Stopped` (see the module's docstring).
    """
    from ..checkpoints import StyleCheckpoint  # not at the top: it loads Jittor, which styles/merge-reports skip

    outputs = Path(outputs).resolve()
    # a bad recipe file fails here, not in every notebook
    run = run_digest(model_name(model), run_recipe(model, recipe))
    # PYTHONFAULTHANDLER: a kernel that dies of a signal (a crash in compiled code) prints its Python stack
    env = dict(os.environ, STYLEBLEND_QUIET="1", PYTHONFAULTHANDLER="1",
               **({"STYLEBLEND_SMOKE": "1"} if smoke_mode(model) else {}))
    if banner(model):
        echo(banner(model))
    params = {"set_name": set_name, "data_root": Path(data_root).resolve(),
              "results_root": Path(results_root).resolve(), "checkpoints_root": Path(checkpoints_root).resolve(),
              "output_root": outputs, "model": model or "", "recipe_file": Path(recipe).resolve() if recipe else ""}
    all_rows: List[ReportRow] = []
    header = functools.partial(report_header, model, params["results_root"], set_name, styles)
    with stop_on_signals():
        for style in styles:
            # the runner's lock, never the notebooks': a second runner on this style stops here, naming this one
            with style_lock(StyleCheckpoint(params["checkpoints_root"], set_name, style)):
                all_rows += _run_style(style, folder, outputs, dict(params, style=style), env, gpus, merge, header,
                                       kernel_retries, run, echo)
    echo(f"report: {outputs / 'report.md' if merge else outputs / 'reports'}")
    return all_rows
