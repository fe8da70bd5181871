"""``styleblend`` — the command line over the package's stage functions.

Every subcommand takes the same options with the same meanings (``--set``, ``--styles``, ``--data``,
``--results``, ``--checkpoints``, ``--model``, ``--config``, ``--seed``, ``--force``, ``--smoke``).
Errors print one line and exit with status 2 (the traceback only with ``--debug``); Ctrl-C and SIGTERM print one
line and exit 130 or 143 after the command cleaned up (:mod:`styleblend.runners.signals`).
"""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import List, Optional

from ..errors import StyleBlendError
from .notebooks import KERNEL_RETRIES
from .signals import stop_on_signals

CHAIN = ("sdedit", "coarse", "fine", "generate", "reproduce")  # the subcommands that run stages of the chain


def _styles(text: Optional[str]) -> Optional[List[str]]:
    if not text:
        return None
    return [s for s in text.replace(",", " ").split() if s]


def _count(text: str) -> int:
    """A whole number ≥ 0 (argparse type)."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number ≥ 0")
    return int(text)


def _selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="set_name", default="B", help="set name: results go to RESULTS/SET/STYLE (default B)")
    p.add_argument("--styles", default=None, help="style ids, e.g. 00,05 (default: every style found in --data)")
    p.add_argument("--data", default=None,
                   help="folder holding <style>/images and <style>/prompt.json (default data/SET)")


def _paths(p: argparse.ArgumentParser) -> None:
    _selection(p)
    p.add_argument("--results", default="result", help="images go to RESULTS/SET/STYLE/<Prompt>.png")
    p.add_argument("--checkpoints", default="checkpoints", help="learned files go to CHECKPOINTS/SET/STYLE/")
    p.add_argument("--model", default=None, help="SD 2.1 folder or hub id (default: the embedded tiny model)")
    p.add_argument("--config", default=None, help="a recipe YAML overriding the defaults (partial is fine)")


def _common(p: argparse.ArgumentParser) -> None:
    _paths(p)
    p.add_argument("--seed", type=_count, default=None,
                   help="one seed (a whole number ≥ 0) for every prompt (default: per-prompt seeds)")
    p.add_argument("--force", action="store_true", help="retrain / regenerate even where outputs exist")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and a few steps (images still 512²); always "
                   "without --model")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="styleblend", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {"sdedit": "build the SDEdit images for the coarse style", "coarse": "train <C> + text-encoder LoRA",
             "fine": "train <F> (textual inversion) + UNet LoRA", "generate": "two-branch StyleBlend generation",
             "reproduce": "all stages for every selected style (skips what is done)"}
    for name in CHAIN:
        _common(sub.add_parser(name, help=helps[name]))
    ev = sub.add_parser("evaluate", help="the challenge score for generated images")
    _common(ev)
    ev.add_argument("--out", default=None, help="write the scores to this CSV file")
    ev.add_argument("--dino", default=None, help="local DINOv2 (facebook/dinov2-base) folder")
    ev.add_argument("--clip", default=None, help="local CLIP ViT-L/14 folder")
    ev.add_argument("--lpips", action="store_true", help="compute LPIPS (the lpips package; it fetches SqueezeNet)")
    ev.add_argument("--fid", default=None, help="local Inception file for FID (inception-2015-12-05.pt)")
    ev.add_argument("--allow-partial", action="store_true", help="score styles with missing or wrong-size images "
                    "too (the table flags them); default: an error")
    ab = sub.add_parser("ablation", help="generate and score each ablation (CSB only, FSB only, Q only, KV only, "
                        "full) for trained styles; a table")
    _paths(ab)
    ab.add_argument("--out", default="outputs/ablation", help="images per variant and ablation.md (default "
                    "outputs/ablation)")
    ab.add_argument("--parameters", action="store_true", help="also the full blend with other blend settings")
    ab.add_argument("--seed", type=_count, default=None, help="one seed for every prompt (default: per-prompt)")
    nb = sub.add_parser("notebooks", help="run the numbered notebooks with papermill (make reproduce)")
    _paths(nb)
    nb.add_argument("--outputs", default="outputs", help="executed notebooks and the run report")
    nb.add_argument("--gpus", default=None, help="GPU ids, e.g. 0,1,2,3: each style holds a free one and its "
                    "processes see only it (CUDA_VISIBLE_DEVICES); default: nothing pinned")
    nb.add_argument("--kernel-retries", type=_count, default=KERNEL_RETRIES, help="start a notebook again this "
                    "many times when its kernel dies (a crash, not an error in a cell); default %(default)s")
    nb.add_argument("--no-merge", action="store_true", help="write only OUTPUTS/reports/<style>.csv (parallel jobs; "
                    "merge-reports joins them)")
    st = sub.add_parser("styles", help="print the selected style ids in run order (make reproduce, Slurm array tasks)")
    _selection(st)
    mr = sub.add_parser("merge-reports", help="join OUTPUTS/reports/<style>.csv into OUTPUTS/report.md and report.csv")
    _selection(mr)
    mr.add_argument("--outputs", default="outputs", help="where the per-style reports are")
    mr.add_argument("--model", default=None, help="the model the styles ran with (the report's header)")
    mr.add_argument("--results", default="result", help="the generated images (their manifests name the model)")
    warm = sub.add_parser("warmup", help="compile every Jittor kernel the notebooks need, once per machine "
                          "(make warmup; make demo, reproduce and test run it first)")
    _selection(warm)
    warm.add_argument("--model", default=None, help="SD 2.1 folder or hub id (default: the embedded tiny model)")
    warm.add_argument("--config", default=None, help="the recipe YAML the notebooks will use")
    warm.add_argument("--force", action="store_true", help="compile again even where this machine did")
    data = sub.add_parser("data", help="lay out downloaded style images into DATA/<style>/images")
    data.add_argument("--from", dest="source", required=True)
    data.add_argument("--data", required=True)
    tiny = sub.add_parser("write-tiny", help="write the tiny random SD model (diffusers folder format)")
    tiny.add_argument("path")
    tiny.add_argument("--seed", type=_count, default=0)
    world = sub.add_parser("toy-world", help="write the toy style set (held-out rendering styles of the toy world, "
                           "laid out like B)")
    world.add_argument("--data", default="data/toy", help="where (default data/toy); existing files are kept")
    world.add_argument("--seed", type=_count, default=0)
    toy = sub.add_parser("pretrain-toy", help="pretrain the toy model from scratch on the toy world (VAE, then "
                         "text encoder + UNet; a GPU is advised; rerun after an interruption, it continues from "
                         "PATH.partial.safetensors)")
    toy.add_argument("path", help="the new model folder")
    toy.add_argument("--config", default=None, help="a YAML overriding configs/toy/pretrain.yaml's numbers")
    toy.add_argument("--smoke", action="store_true", help="a few steps (a check that it runs)")
    rnd = sub.add_parser("write-random",
                         help="write a full SD 2.1-architecture folder with random weights (GPU timing)")
    rnd.add_argument("path")
    rnd.add_argument("--seed", type=_count, default=0)
    rnd.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    return parser


def _data_root(args) -> Path:
    """``--data``, or ``data/<set>``; relative to the current folder, as for any command."""
    return (Path(args.data) if args.data else Path("data") / args.set_name).resolve()


def _run_stage(args) -> None:
    from .. import reproduce as rp
    from ..data import select_styles
    from ..locks import style_lock
    from ..run_context import open_set
    from ..validate import validate_styles

    results, checkpoints = Path(args.results).resolve(), Path(args.checkpoints).resolve()
    if args.command == "reproduce":
        rp.reproduce(args.set_name, _data_root(args), results, checkpoints, _styles(args.styles), args.model,
                     args.config, args.seed, args.force, args.smoke)
        return
    styles = select_styles(_data_root(args), _styles(args.styles))
    run = open_set(_data_root(args), args.set_name, args.model, args.config, results, checkpoints, smoke=args.smoke)
    sd, recipe, paths = run.sd, run.recipe, run.paths
    inputs = validate_styles(paths.data_root, styles, recipe, paths.set_name, sd.tokenizer)
    for note in inputs.notes:
        print(f"note: {note}")
    for style in styles:
        with style_lock(paths.checkpoint(style)):
            _run_one_stage(args, sd, recipe, paths, inputs.styles[style])


def _run_one_stage(args, sd, recipe, paths, style_data) -> None:
    """One stage command (sdedit, coarse, fine, generate) for one style."""
    from .. import reproduce as rp

    style = style_data.style
    if args.command == "sdedit":
        result = rp.run_sdedit(sd, style_data, recipe, paths, args.force)
        print(f"style {style}: SDEdit images in {paths.checkpoint(style).sdedit_dir}. {result.note or ''}")
    elif args.command == "coarse":
        result = rp.run_coarse(sd, style_data, recipe, paths, args.force)
        print(f"style {style}: coarse style " + ("already trained" if result is None else "trained"))
    elif args.command == "fine":
        result = rp.run_fine(sd, style_data, recipe, paths, args.force)
        print(f"style {style}: fine style " + ("already trained" if result is None else "trained"))
    else:
        images = rp.run_generate(sd, style_data, recipe, paths, args.seed, args.force)
        print(f"style {style}: {len(images)} images in {paths.results_root / args.set_name / style}")


def _evaluate(args) -> None:
    from ..evaluate import EvalModels, evaluate_set, markdown_table

    if args.out and Path(args.out).is_dir():
        raise StyleBlendError(f"--out {args.out} is a folder; give a CSV file name")
    scores = evaluate_set(args.set_name, Path(args.results), _data_root(args), styles=_styles(args.styles),
                          models=EvalModels(dino=args.dino, clip=args.clip, lpips=args.lpips or None, fid=args.fid),
                          out_csv=args.out, allow_partial=args.allow_partial)
    print(markdown_table(scores))


def _ablation(args) -> None:
    from ..ablation import MODE_VARIANTS, PARAMETER_VARIANTS, ablation_table, run_ablation
    from ..data import select_styles
    from ..io import write_atomic
    from ..run_context import open_set

    styles = select_styles(_data_root(args), _styles(args.styles))
    run = open_set(_data_root(args), args.set_name, args.model, args.config, args.results, args.checkpoints)
    variants = MODE_VARIANTS + (PARAMETER_VARIANTS if args.parameters else ())
    out = Path(args.out).resolve()
    table = ablation_table(run_ablation(run, styles, out, variants, args.seed))
    text = f"Set {run.paths.set_name}, styles {', '.join(styles)}; mean over styles.\n\n{table}\n"
    write_atomic(out / "ablation.md", lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=True)
    print(text + f"table: {out / 'ablation.md'}")


def _notebooks(args) -> None:
    from .gpus import parse_gpus
    from .notebooks import report_header, run_notebooks, unfinished
    from ..data import select_styles

    gpus = parse_gpus(args.gpus)
    styles = select_styles(_data_root(args), _styles(args.styles))
    rows = run_notebooks(args.set_name, _data_root(args), styles, args.results, args.checkpoints, args.outputs,
                         model=args.model, recipe=args.config, gpus=gpus, merge=not args.no_merge,
                         kernel_retries=args.kernel_retries)
    if not args.no_merge:
        _gallery(args, styles, report_header(args.model, Path(args.results).resolve(), args.set_name, styles), rows)
    failed = unfinished(rows, styles)
    if failed:
        report = Path(args.outputs) / ("reports" if args.no_merge else "report.md")
        raise StyleBlendError(f"style(s) {', '.join(failed)} did not finish: see {report}")


def _gallery(args, styles, header: str, rows) -> None:
    """Beside the merged report, the page to look at its images: written even when a style failed, as it shows
    what is missing."""
    from ..gallery import write_gallery

    path = write_gallery(args.outputs, args.set_name, _data_root(args), args.results, styles, header, rows)
    print(f"gallery: {path}")


def _merge_reports(args) -> None:
    from .notebooks import merge_reports, report_header, unfinished
    from ..data import select_styles

    styles = select_styles(_data_root(args), _styles(args.styles))
    header = report_header(args.model, Path(args.results).resolve(), args.set_name, styles)
    rows = merge_reports(args.outputs, header)
    _gallery(args, styles, header, rows)
    report = Path(args.outputs) / "report.md"
    failed = unfinished(rows, styles)
    if failed:
        raise StyleBlendError(f"style(s) {', '.join(failed)} did not finish (failed or not run): see {report}")
    print(f"report: {report} ({len(styles)} styles, every notebook ok)")


def _clear_bars() -> None:
    """Close the progress bars an error or interrupt left open (a comprehension's frame, kept by the traceback,
    holds its bar), so the message that follows starts a clean line, not the end of a half-drawn bar. On a
    terminal closing wipes the bar's line (``leave=False``); in a log, where ``\r`` does not go back, a newline."""
    from tqdm import tqdm

    bars = list(getattr(tqdm, "_instances", ()))
    for bar in bars:
        bar.close()
    if bars and not sys.stderr.isatty():
        sys.stderr.write("\n")


def _fail(message: str, status: int) -> int:
    _clear_bars()
    print(message, file=sys.stderr)
    return status


def _dispatch(args) -> None:
    """Run the parsed command."""
    if args.command in CHAIN:
        _run_stage(args)
    elif args.command == "evaluate":
        _evaluate(args)
    elif args.command == "notebooks":
        _notebooks(args)
    elif args.command == "ablation":
        _ablation(args)
    elif args.command == "styles":
        from ..data import select_styles
        print(" ".join(select_styles(_data_root(args), _styles(args.styles))))
    elif args.command == "merge-reports":
        _merge_reports(args)
    elif args.command == "warmup":
        from ..data import select_styles
        from .warmup import warm
        style = select_styles(_data_root(args), _styles(args.styles))[0]
        warm(args.set_name, _data_root(args), style, args.model, args.config, args.force)
    elif args.command == "data":
        from ..data import import_images
        done = import_images(Path(args.source), Path(args.data))
        print(f"{len(done.copied)} files copied into {args.data}, {len(done.skipped)} already there (kept)")
    elif args.command == "write-tiny":
        from ..sd.loading import write_tiny_sd
        print(write_tiny_sd(args.path, seed=args.seed))
    elif args.command == "toy-world":
        from ..toyworld import write_style_set
        written = write_style_set(args.data, seed=args.seed)
        print(f"{len(written)} files written into {args.data} (existing files kept)")
    elif args.command == "pretrain-toy":
        from ..pretrain import pretrain_toy
        print(pretrain_toy(args.path, args.config, args.smoke))
    elif args.command == "write-random":
        from ..sd.loading import write_random_sd
        print(write_random_sd(args.path, seed=args.seed, dtype=args.dtype))


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with stop_on_signals():  # SIGTERM too runs the command's cleanup on the way out
            _dispatch(args)
    except (StyleBlendError, FileNotFoundError) as err:
        if args.debug:
            traceback.print_exc()
        return _fail(f"error: {err}", 2)
    except KeyboardInterrupt as stop:  # Ctrl-C, or Stopped (SIGINT/SIGTERM; status 130/143)
        if args.debug:
            traceback.print_exc()
        return _fail(str(stop) or "interrupted", getattr(stop, "status", 130))
    except Exception as err:  # an unexpected failure: one line, the traceback with --debug
        if args.debug:
            raise
        return _fail(f"error: {type(err).__name__}: {err} (run with --debug for the traceback)", 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
