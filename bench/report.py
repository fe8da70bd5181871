"""The performance table of docs/performance.md from the benchmarks' JSON lines (bench/run.sh writes them).

    python bench/report.py bench-results.jsonl        # markdown on stdout
Lines it does not know are skipped; a measurement missing from the file shows as "–".
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List, Optional

from styleblend_image import B_IMAGES_PER_STYLE
from train_step import TRAININGS, recipe_steps

from styleblend.config import load_recipe


def read(path: Path) -> List[dict]:
    """The JSON objects of ``path``, one per line that holds one."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("{"):
            rows.append(json.loads(line))
    return rows


def pick(rows: List[dict], **match) -> Optional[dict]:
    """The last row whose fields equal ``match`` (a missing field counts as False)."""
    found = [r for r in rows if all(r.get(k, False) == v for k, v in match.items())]
    return found[-1] if found else None


def num(row: Optional[dict], key: str, digits: int = 1) -> str:
    return "–" if row is None or row.get(key) is None else f"{row[key]:.{digits}f}"


def ratio(ours: Optional[dict], base: Optional[dict], key: str) -> str:
    if ours is None or base is None or not base.get(key):
        return "–"
    return f"{ours[key] / base[key]:.2f}×"


def report(rows: List[dict]) -> str:
    """Markdown: the card(s), the UNet step, the StyleBlend image, the training of one style."""
    cards = sorted({r["device"] for r in rows if "device" in r})
    out = [f"Card: {', '.join(cards) or '–'}", "",
           "| what | dtype | ours | diffusers | ratio | peak ours (MiB) | peak diffusers (MiB) |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for dtype in ("float16", "float32"):
        ours, base = pick(rows, impl="jittor", dtype=dtype, batch=4), pick(rows, impl="diffusers", dtype=dtype, batch=4)
        out.append(f"| UNet step, batch 4, 96² (ms) | {dtype} | {num(ours, 'ms_per_step')} | "
                   f"{num(base, 'ms_per_step')} | {ratio(ours, base, 'ms_per_step')} | {num(ours, 'peak_gpu_mb', 0)} | "
                   f"{num(base, 'peak_gpu_mb', 0)} |")
    images = [r for r in rows if r.get("what", "").startswith("StyleBlend image")]
    for dtype in ("float16", "float32"):
        ours = pick(images, impl="jittor", memory=False, dtype=dtype, allocator=False, gc=False)
        base = pick(images, impl="diffusers", dtype=dtype)
        what = (ours or base or {}).get("what", "StyleBlend image")
        out.append(f"| {what} (s) | {dtype} | {num(ours, 'seconds', 2)} | "
                   f"{num(base, 'seconds', 2)} | {ratio(ours, base, 'seconds')} | {num(ours, 'peak_gpu_mb', 0)} | "
                   f"{num(base, 'peak_gpu_mb', 0)} |")
    out += ["", training(rows), "", memory(rows), "", allocators(images)]
    return "\n".join(out) + "\n"


def training(rows: List[dict]) -> str:
    """Minutes of one style with the default recipe: the three trainings' steps, ours beside diffusers' in each
    dtype measured, and the SDEdit data."""
    recipe = load_recipe()
    steps = recipe_steps(recipe)

    def run(impl: str, dtype: str) -> Optional[dict]:
        found = [r for r in rows if r.get("impl", "jittor") == impl and r.get("dtype") == dtype
                 and not r.get("memory") and not r.get("staged") and all(f"{k}_ms" in r for k in TRAININGS)]
        return found[-1] if found else None

    runs = {(impl, dtype): run(impl, dtype) for impl in ("jittor", "diffusers") for dtype in ("float32", "float16")}
    dtypes = [d for d in ("float32", "float16") if runs["jittor", d] or runs["diffusers", d]]
    out = ["| one style, default recipe | dtype | ours ms / step | diffusers ms / step | ratio | steps | "
           "ours minutes | diffusers minutes |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for dtype in dtypes:
        ours, base = runs["jittor", dtype], runs["diffusers", dtype]
        for name in TRAININGS:
            key = f"{name}_ms"
            out.append(f"| {name.replace('_', ' ')} | {dtype} | {num(ours, key)} | {num(base, key)} | "
                       f"{ratio(ours, base, key)} | {steps[name]} | {minutes(ours, name, steps)} | "
                       f"{minutes(base, name, steps)} |")
    table = pick(rows, **{"textual_inversion_table_finite": True})
    if table is not None:
        out.append(f"| (ours: textual inversion on the whole token table, as the original and diffusers) | "
                   f"{table['dtype']} | {table['textual_inversion_table_ms']} | | | | | |")
    sdedit = next((r for r in reversed(rows) if "sdedit_minutes" in r), None)
    sd_min = None if sdedit is None else sdedit["sdedit_minutes"]
    out.append(f"| SDEdit data ({recipe.sdedit.candidates} candidates × {B_IMAGES_PER_STYLE} images) | "
               f"{sdedit['dtype'] if sdedit else '–'} | | | | | {'–' if sd_min is None else sd_min} | |")
    for dtype in dtypes:  # open ("–") while a part is missing
        ours = runs["jittor", dtype]
        total = "–" if ours is None or sd_min is None else \
            f"{sd_min + sum(ours[f'{k}_ms'] * n for k, n in steps.items()) / 60000:.1f}"
        out.append(f"| **one style, ours ({dtype} training)** | | | | | | **{total}** | |")
    peaks = [f"{impl} {dtype} {r['peak_gpu_mb']:.0f} MiB" for dtype in dtypes for impl in ("jittor", "diffusers")
             if (r := runs[impl, dtype]) is not None]
    if peaks:
        out.append("\nTraining process peak (nvidia-smi): " + "; ".join(peaks) + ".")
    return "\n".join(out)


def minutes(row: Optional[dict], name: str, steps: dict) -> str:
    """The minutes ``steps[name]`` steps of ``row``'s ``name`` training take, or "–"."""
    return "–" if row is None else f"{row[f'{name}_ms'] * steps[name] / 60000:.1f}"


def memory(rows: List[dict]) -> str:
    """Jittor's own peak of live variables beside nvidia-smi's, for the runs made with --memory."""
    out = ["| run (--memory) | dtype | nvidia-smi peak (MiB) | Jittor live peak (MiB) | largest live variables (MiB) |",
           "|---|---|---:|---:|---|"]
    for r in rows:
        if "jittor_live_peak_mb" in r:
            what = r.get("what") or "training: " + ", ".join(k[:-3] for k in r if k.endswith("_ms"))
            largest = "; ".join(f"{mb} {var}" for mb, var in r["jittor_largest_vars"])
            out.append(f"| {what} | {r['dtype']} | {r['peak_gpu_mb']:.0f} | {r['jittor_live_peak_mb']} | {largest} |")
    return "\n".join(out)


def allocators(images: List[dict]) -> str:
    """Our float16 image under each Jittor allocator setting bench/run.sh tried, beside the default."""
    out = ["| Jittor allocator (our image, float16) | s / image | nvidia-smi peak (MiB) |", "|---|---:|---:|"]
    ours = [r for r in images if r.get("impl") == "jittor" and r.get("dtype") == "float16" and not r.get("memory")]
    for r in sorted(ours, key=lambda r: bool(r.get("allocator") or r.get("gc"))):  # the default first
        what = r.get("allocator") or ("jt.gc() after each image" if r.get("gc") else "default")
        out.append(f"| {what} | {num(r, 'seconds', 2)} | {num(r, 'peak_gpu_mb', 0)} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, help="a JSON-lines file of bench/run.sh")
    a = p.parse_args()
    if not a.results.is_file():
        raise SystemExit(f"bench/report.py: no results file {a.results} (run bench/run.sh first)")
    print(report(read(a.results)), end="")


if __name__ == "__main__":
    main()
