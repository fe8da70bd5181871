"""The two ways to install (pip + pyproject.toml, conda + environment.yml) ask for the same packages."""
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return sorted(project["dependencies"] + project["optional-dependencies"]["test"])


def _conda_pip_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_lists = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_lists) == 1, "environment.yml must have exactly one pip: list"
    return sorted(pip_lists[0])


def test_environment_yml_matches_pyproject():
    assert _conda_pip_requirements() == _pyproject_requirements()


def test_jittor_and_numpy_pins():
    reqs = _pyproject_requirements()
    assert "jittor==1.3.11.0" in reqs and "numpy<2" in reqs and "torch==2.13.0" in reqs
