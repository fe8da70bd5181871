"""The results gallery: one offline HTML page per run with every style's references, generated images (a missing one
shown as missing), notebook rows and scores, all text escaped; the command line's merge writes it."""
import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
from PIL import Image

from styleblend.data import result_name
from styleblend.evaluate import StyleScore, write_csv
from styleblend.evaluate import scores_file
from styleblend.gallery import write_gallery
from styleblend.runners import cli
from styleblend.runners import notebooks as runner
from styleblend.runners.notebooks import ReportRow, merge_reports, report_header, style_report

SET = "demo"
PROMPTS = {"a": ["Ring", "cat & <dog>", "50% off #1"], "b": ["Ring", "Tree", "Hotel"]}
MISSING = ("b", "Tree")  # the one prompt without its image
REFERENCES = ["red_cat", "blue_house"]


class Page(HTMLParser):
    """What the tests look at: element ids, links (with the image inside each), figures and their captions."""

    def __init__(self):
        super().__init__()
        self.ids, self.links, self.figures, self.index = set(), [], [], []
        self._open = []  # the tags we are inside of, with their attributes

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.ids.update([attrs["id"]] if "id" in attrs else [])
        if tag == "a":
            self.links.append({"href": attrs["href"], "img": None})
            if any(t == "nav" for t, _ in self._open):
                self.index.append(attrs["href"])
        if tag == "img" and any(t == "a" for t, _ in self._open):
            self.links[-1]["img"] = attrs["src"]
        if tag == "figure":
            self.figures.append({"class": attrs.get("class", ""), "caption": ""})
        if tag != "img":
            self._open.append((tag, attrs))

    def handle_endtag(self, tag):
        while self._open and self._open.pop()[0] != tag:
            pass

    def handle_data(self, data):
        if self._open and self._open[-1][0] == "figcaption":
            self.figures[-1]["caption"] += data


def _png(path: Path, colour) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (48, 32), colour).save(path)


def _fake_run(root: Path):
    """Data, results (all but :data:`MISSING`) and per-style reports of a two-style run; (data, results, outputs)."""
    data, results, outputs = root / "data", root / "result", root / "outputs"
    for style, prompts in PROMPTS.items():
        for i, name in enumerate(REFERENCES):
            _png(data / style / "images" / f"{name}.png", (40 * i, 90, 200))
        (data / style / "prompt.json").write_text(json.dumps({str(i): p for i, p in enumerate(prompts)}))
        for prompt in prompts:
            if (style, prompt) != MISSING:
                _png(results / SET / style / result_name(prompt), (200, 60, 30))
    rows = {"a": [ReportRow("00_setup", "a", 12.5, 900.0, None, "ok", run="r1")],
            "b": [ReportRow("00_setup", "b", 3.25, 800.0, 2048.0, "failed", "ValueError: <broken> & more")]}
    for style, style_rows in rows.items():
        runner._write_csv(style_rows, style_report(outputs, style))
    return data, results, outputs


def _page(path: Path):
    text = path.read_text(encoding="utf-8")
    page = Page()
    page.feed(text)
    return text, page


def _linked(page: Page, gallery: Path, target: Path):
    """The links of ``page`` whose relative path leads to ``target``."""
    return [link for link in page.links if not link["href"].startswith("#")
            and (gallery.parent / unquote(link["href"])).resolve() == target.resolve()]


def test_the_gallery_shows_every_image_links_it_marks_the_missing_one_and_escapes_text(tmp_path):
    data, results, outputs = _fake_run(tmp_path)
    rows = merge_reports(outputs, report_header(None))
    write_csv([StyleScore("a", hist=0.4321), StyleScore("b"), StyleScore("mean")], scores_file(outputs, SET))

    gallery = write_gallery(outputs, SET, data, results, ["a", "b"], report_header(None), rows)
    assert gallery == outputs.resolve() / "gallery.html"
    text, page = _page(gallery)
    assert page.index == ["#style-a", "#style-b"] and {"style-a", "style-b"} <= page.ids
    for style, prompts in PROMPTS.items():
        for name in REFERENCES:
            (link,) = _linked(page, gallery, data / style / "images" / f"{name}.png")
            assert link["img"].startswith("data:image/jpeg;base64,")
            assert {"class": "", "caption": name.replace("_", " ")} in page.figures
        for prompt in prompts:
            links = _linked(page, gallery, results / SET / style / result_name(prompt))
            if (style, prompt) == MISSING:
                assert not links and {"class": "missing", "caption": prompt} in page.figures
            else:
                assert len(links) == 1 and links[0]["img"].startswith("data:image/jpeg;base64,")
    assert {"class": "", "caption": "cat & <dog>"} in page.figures, "the parsed caption is the prompt itself"
    assert "cat &amp; &lt;dog&gt;" in text and "<dog>" not in text and "<broken>" not in text
    assert "http://" not in text and "https://" not in text, "nothing is fetched from the network"
    assert "TINY" in text and "12.5" in text and "failed" in text and "0.4321" in text


def test_without_scores_or_results_the_page_says_so_and_an_unreadable_image_is_no_error(tmp_path):
    data, _results, outputs = _fake_run(tmp_path)
    (data / "a" / "images" / "red_cat.png").write_text("not a picture")
    text, page = _page(write_gallery(outputs, SET, data, tmp_path / "none", ["a"], "Model: m"))
    assert "No scores" in text and "Model: m" in text and "not in the run report" in text
    assert [f["class"] for f in page.figures].count("missing") == len(PROMPTS["a"])
    unreadable = _linked(page, outputs / "gallery.html", data / "a" / "images" / "red_cat.png")
    assert "unreadable" in text and len(unreadable) == 1 and unreadable[0]["img"] is None, "linked, no thumbnail"


@pytest.mark.parametrize("no_merge", [False, True])
def test_the_notebooks_command_writes_the_gallery_after_its_merge_only(tmp_path, monkeypatch, capsys, no_merge):
    data, results, outputs = _fake_run(tmp_path)

    def fake_run_notebooks(set_name, data_root, styles, results_root, checkpoints_root, out, merge, **_):
        return merge_reports(out, "header") if merge else []

    monkeypatch.setattr(runner, "run_notebooks", fake_run_notebooks)
    cli.main(["notebooks", "--set", SET, "--data", str(data), "--results", str(results), "--outputs", str(outputs)]
             + (["--no-merge"] if no_merge else []))
    gallery = outputs.resolve() / "gallery.html"
    assert (f"gallery: {gallery}" in capsys.readouterr().out) is not no_merge
    assert gallery.exists() is not no_merge


def test_merge_reports_writes_the_gallery_even_when_a_style_failed(tmp_path, capsys):
    data, results, outputs = _fake_run(tmp_path)
    status = cli.main(["merge-reports", "--set", SET, "--data", str(data), "--results", str(results),
                       "--outputs", str(outputs)])
    out, err = capsys.readouterr()
    gallery = outputs.resolve() / "gallery.html"
    assert status == 2 and "did not finish" in err and f"gallery: {gallery}" in out
    _, page = _page(gallery)
    assert page.index == ["#style-a", "#style-b"]
