"""Notebook policy: numbered, stripped of outputs in git, exactly one `parameters` cell with the shared names,
no logic of their own (no function or class definitions: the package owns the logic), and an `## Exercises`
section at the end."""
import ast
import json
import logging
from pathlib import Path

import papermill
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXPECTED = ["00_setup_and_model", "01_sdedit_data", "02_coarse_style", "03_fine_style", "04_style_blend",
            "05_generate_B", "06_evaluate"]
SHARED_PARAMETERS = ("style", "set_name", "data_root", "model", "recipe_file", "results_root", "checkpoints_root",
                     "output_root", "steps", "seed")


def test_the_seven_numbered_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stripped_and_thin(path):
    cells = json.loads(path.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "commit notebooks stripped"
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged parameters"
    source = "".join(tagged[0]["source"])
    for name in SHARED_PARAMETERS:
        assert f"{name} =" in source, f"parameters cell lacks {name}"
    for cell in code:
        src = "".join(cell["source"])
        assert "\ndef " not in "\n" + src and "\nclass " not in "\n" + src, "logic belongs in the styleblend package"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_reads_every_parameter_with_its_help(path, caplog):
    """Plain literals with a comment each, so `papermill --help-notebook` lists them and `-p` can replace them."""
    with caplog.at_level(logging.WARNING, logger="papermill"):
        parameters = papermill.inspect_notebook(str(path))
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    assert set(SHARED_PARAMETERS) <= set(parameters)
    for name, parameter in parameters.items():
        assert parameter["help"], f"{name} has no comment"
        ast.literal_eval(parameter["default"])  # a literal, not an expression


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_setup_is_one_call_of_the_run_context(path):
    code = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    setup = "".join(code[2]["source"]).strip().splitlines()
    assert len(setup) <= 3 and setup[0].startswith("run = open_notebook(")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_ends_with_exercises(path):
    """The last section is `## Exercises`: an intro, then at least two `### Exercise` cells, each followed by the
    one code cell that performs it."""
    cells = json.loads(path.read_text())["cells"]
    text = ["".join(c["source"]).lstrip() if c["cell_type"] == "markdown" else None for c in cells]
    starts = [i for i, t in enumerate(text) if t is not None and t.startswith("## Exercises")]
    assert len(starts) == 1, "one markdown cell starting with '## Exercises'"
    section = cells[starts[0] + 1:]
    assert len(section) >= 4 and len(section) % 2 == 0, "only exercises (markdown, code) follow the heading"
    for task, code in zip(section[::2], section[1::2]):
        assert task["cell_type"] == "markdown" and "".join(task["source"]).startswith("### Exercise"), \
            "each exercise starts with a '### Exercise' markdown cell"
        assert code["cell_type"] == "code" and "".join(code["source"]).strip(), "each exercise has one code cell"
