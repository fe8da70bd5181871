"""``outputs/gallery.html``: a run's images, notebook rows and scores on one page, to look at the results at once.

The page is one self-contained file that opens offline in any browser, so it can be copied or mailed alone:
thumbnails are embedded (base64 JPEG data URIs), CSS is inline, nothing is fetched. Each thumbnail links to its
full image by a path relative to the page, so the links work wherever the outputs and results folders move
together. A prompt without its image is shown as *missing*, never an error: a gallery of a half-finished run is
what shows what is left to do.
"""
from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Iterable, List, Optional, Sequence
from urllib.parse import quote

from .data import IMAGE_SUFFIXES, load_prompts, open_image, result_name
from .errors import DataError
from .evaluate import COLUMNS, StyleScore, read_csv, scores_file
from .io import write_atomic

GALLERY = "gallery.html"
THUMB_PX = 128  # the longest side of an embedded thumbnail
THUMB_QUALITY = 80  # JPEG quality of the thumbnails: small enough to embed hundreds
CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 0.8em; }
figure { margin: 0; text-align: center; }
figure img, .placeholder { width: 128px; height: 128px; object-fit: contain; }
.placeholder { display: inline-flex; align-items: center; justify-content: center; background: #f3d6d6;
  color: #900; font-weight: bold; }
figcaption { font-size: 0.85em; overflow-wrap: anywhere; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
.ok { color: #070; } .failed, .stopped { color: #b00; }
section { border-top: 2px solid #ddd; margin-top: 2em; }
"""


def write_gallery(outputs, set_name: str, data_root, results_root, styles: Sequence[str], header: str,
                  rows: Iterable = (), scores: Optional[Sequence[StyleScore]] = None) -> Path:
    """Write ``<outputs>/gallery.html`` (replacing it: it is generated) and return its path.

    ``header``: the run report's header (:func:`styleblend.runners.notebooks.report_header`: the model);
    ``rows``: the report's rows (:class:`~styleblend.runners.notebooks.ReportRow`), shown per style;
    ``scores``: the set's scores, by default those of :func:`~styleblend.evaluate.scores_file` when it exists.
    """
    path = Path(outputs).resolve() / GALLERY
    scores, score_note = (scores, "") if scores is not None else _stored_scores(scores_file(outputs, set_name))
    by_style = {s.style: s for s in scores}
    rows = list(rows)
    body = [f"<h1>StyleBlend results: set {_e(set_name)}</h1>", *(f"<p>{_e(line)}</p>" for line in header.splitlines())]
    body += [f"<p>{_e(score_note)}</p>"] if score_note else []
    body += _score_table(by_style["mean"], "Set score (mean over styles)") if "mean" in by_style else []
    body.append(_index(styles))
    for style in styles:
        body += _style_section(path.parent, Path(data_root) / style, Path(results_root) / set_name / style,
                               [r for r in rows if r.style == style], by_style.get(style))
    page = _page(f"StyleBlend results: set {set_name}", body)
    return write_atomic(path, lambda tmp: tmp.write_text(page, encoding="utf-8"), overwrite=True)


def _page(title: str, body: List[str]) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _stored_scores(csv_path: Path):
    """``(scores, note)``: the stored scores, or none with a note saying why (the page is made regardless)."""
    if not csv_path.is_file():
        return [], f"No scores: {csv_path} does not exist (notebook 06 writes it)."
    try:
        return read_csv(csv_path), ""
    except (DataError, ValueError) as exc:
        return [], f"Scores not shown: {csv_path} could not be read ({exc})."


def _index(styles: Sequence[str]) -> str:
    links = "".join(f"<li><a href=\"#style-{_e(quote(s))}\">{_e(s)}</a></li>" for s in styles)
    return f"<nav><h2>Styles</h2><ul>{links}</ul></nav>"


def _style_section(page_dir: Path, style_dir: Path, results_dir: Path, rows: List, score) -> List[str]:
    """One style: its references, its generated images (one per prompt), its notebooks and its scores."""
    style = style_dir.name
    refs = [_figure(page_dir, p, p.stem.replace("_", " ")) for p in _reference_images(style_dir / "images")]
    out = [f"<section id=\"style-{_e(style)}\"><h2>Style {_e(style)}</h2>", "<h3>Reference images</h3>",
           _grid(refs), "<h3>Generated images</h3>"]
    try:
        prompts = load_prompts(style_dir / "prompt.json").values()
    except DataError as exc:  # a missing or broken prompt.json: said on the page, the rest still shown
        out.append(f"<p class=\"failed\">{_e(exc)}</p>")
    else:
        out.append(_grid([_figure(page_dir, results_dir / result_name(p), p) for p in prompts]))
    out += _notebook_table(rows)
    out += _score_table(score, "Scores") if score is not None else []
    return out + ["</section>"]


def _reference_images(folder: Path) -> List[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _grid(figures: List[str]) -> str:
    return f"<div class=\"grid\">{''.join(figures)}</div>" if figures else "<p>none</p>"


def _figure(page_dir: Path, image: Path, caption: str) -> str:
    """A thumbnail linking to its image, or a placeholder saying it is missing or unreadable."""
    caption_html = f"<figcaption>{_e(caption)}</figcaption>"
    relative = Path(os.path.relpath(image.resolve(), page_dir)).as_posix()
    if not image.is_file():
        return (f"<figure class=\"missing\" title=\"{_e(relative)}\"><div class=\"placeholder\">missing</div>"
                f"{caption_html}</figure>")
    href = quote(relative)
    try:
        thumb = f"<img src=\"{_thumbnail(image)}\" alt=\"{_e(caption)}\">"
    except DataError:
        thumb = "<div class=\"placeholder\">unreadable</div>"
    return f"<figure><a href=\"{_e(href)}\">{thumb}</a>{caption_html}</figure>"


def _thumbnail(image: Path) -> str:
    """A ``data:`` URI of a small JPEG of the image (:data:`THUMB_PX` on its longest side)."""
    img = open_image(image).convert("RGB")
    img.thumbnail((THUMB_PX, THUMB_PX))
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=THUMB_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _number(value, digits: int) -> str:
    """A report cell (a float, or the string the CSV held) rounded; empty when not measured."""
    return "" if value in (None, "") else f"{float(value):.{digits}f}"


def _notebook_table(rows: List) -> List[str]:
    if not rows:
        return ["<h3>Notebooks</h3>", "<p>not in the run report</p>"]
    lines = ["<h3>Notebooks</h3>", "<table><tr><th>notebook</th><th>status</th><th>seconds</th>"
             "<th>peak RAM (MiB)</th><th>peak GPU (MiB)</th><th>message</th></tr>"]
    lines += [f"<tr><td>{_e(r.notebook)}</td><td class=\"{_e(r.status)}\">{_e(r.status)}</td>"
              f"<td>{_number(r.seconds, 1)}</td><td>{_number(r.peak_ram_mb, 0)}</td>"
              f"<td>{_number(r.peak_gpu_mb, 0)}</td><td>{_e(r.message)}</td></tr>" for r in rows]
    return lines + ["</table>"]


def _score_table(score: StyleScore, title: str) -> List[str]:
    """The terms and aggregates that were computed; those that were not are left out (``None`` is no number)."""
    computed = [(c, getattr(score, c)) for c in COLUMNS[1:] if getattr(score, c) is not None]
    notes = [f"<p>incomplete: {_e(problem)}</p>" for problem in score.incomplete]
    if not computed:
        return [f"<h3>{_e(title)}</h3>", "<p>no score term computed</p>", *notes]
    cells = "".join(f"<tr><th>{_e(c)}</th><td>{v:.4f}</td></tr>" for c, v in computed)
    return [f"<h3>{_e(title)}</h3>", f"<table>{cells}</table>", *notes]
