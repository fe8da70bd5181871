"""The one setup of notebooks, CLI and reproduce (styleblend.run_context): paths, set name, smoke rule, recipe."""

from styleblend.run_context import REPO_ROOT, open_set, resolve, smoke_mode

DEMO = REPO_ROOT / "data" / "demo"


def test_relative_paths_start_at_the_repository_root_wherever_the_process_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # e.g. papermill started from another folder
    run = open_set("data/demo", results_root="result", checkpoints_root="checkpoints", load_model=False)
    assert run.paths.data_root == DEMO
    assert (run.paths.results_root, run.paths.checkpoints_root) == (REPO_ROOT / "result", REPO_ROOT / "checkpoints")
    assert resolve(tmp_path / "x") == tmp_path / "x", "absolute paths stay as given"


def test_the_set_name_follows_the_data_folder_unless_given(tmp_path):
    b_set = tmp_path / "B"
    b_set.mkdir()
    assert open_set(b_set, load_model=False).paths.set_name == "B"
    assert open_set(b_set, "mine", load_model=False).paths.set_name == "mine"


def test_smoke_sizes_without_a_model_or_when_asked(monkeypatch):
    monkeypatch.delenv("STYLEBLEND_SMOKE", raising=False)
    assert smoke_mode("") and smoke_mode(None) and smoke_mode("/models/sd21", smoke=True)
    assert not smoke_mode("/models/sd21")
    monkeypatch.setenv("STYLEBLEND_SMOKE", "1")
    assert smoke_mode("/models/sd21")
    monkeypatch.delenv("STYLEBLEND_SMOKE")
    full = open_set(DEMO, model="/models/sd21", load_model=False).recipe
    tiny = open_set(DEMO, load_model=False, steps=7).recipe
    assert full.blend.resolution == 768 and tiny.blend.resolution == 64 and tiny.blend.steps == 7


def test_an_embedded_model_brings_its_sizes_and_a_banner(monkeypatch):
    from styleblend import run_context

    monkeypatch.delenv("STYLEBLEND_SMOKE", raising=False)
    toy = open_set(DEMO, model="toy", load_model=False)
    assert not toy.smoke and toy.recipe.blend.resolution == 64 and toy.recipe.fine.ti_steps == 150
    assert run_context.banner("toy") == "" and run_context.model_name("/models/sd21") == "/models/sd21"
    monkeypatch.setattr(run_context, "DEFAULT_MODEL", "toy")
    default = open_set(DEMO, load_model=False)
    assert not default.smoke and default.recipe.fine.ti_steps == 150
    assert "TOY model" in run_context.banner("") and run_context.model_name("") == "toy"
