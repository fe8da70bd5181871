"""oneDNN on the CPU (styleblend.onednn): Jittor finds the wheels' library instead of downloading its own, and
its convolutions and matrix products run through it."""
import os
import subprocess
import sys

import pytest

from styleblend import onednn

PREFIX = onednn.installed()
needs_wheels = pytest.mark.skipif(PREFIX is None, reason="the onednn wheels are not installed (Linux x86-64 only)")


@needs_wheels
def test_jittor_runs_on_the_wheels_onednn():
    code = ("import styleblend.sd.sampling as s, jittor.compile_extern as c; "
            "print(c.use_mkl, c.mkl_ops is not None and hasattr(c.mkl_ops, 'mkl_conv'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={k: v for k, v in os.environ.items() if k != "use_mkl"} | {"STYLEBLEND_DEVICE": "cpu"})
    assert out.stdout.split()[-2:] == ["True", "True"]


@needs_wheels
def test_jittors_folder_links_to_this_environment_and_is_kept_on_a_second_start(tmp_path, monkeypatch):
    folder = tmp_path / "mkl" / onednn.FOLDER
    monkeypatch.setattr(onednn, "jittor_folder", lambda: folder)
    assert onednn.provide(PREFIX)
    assert (folder / "lib" / "libmkldnn.so").resolve() == (PREFIX / "lib" / "libdnnl.so.2").resolve()
    assert (folder / "include" / "dnnl.hpp").is_file()
    target = os.readlink(folder)
    assert onednn.provide(PREFIX) and os.readlink(folder) == target
    assert sorted(p.name for p in folder.parent.iterdir()) == sorted([onednn.FOLDER, target])  # nothing left over


@needs_wheels
def test_a_folder_jittor_made_is_used_as_it_is(tmp_path, monkeypatch):
    folder = tmp_path / "mkl" / onednn.FOLDER
    (folder / "lib").mkdir(parents=True)
    monkeypatch.setattr(onednn, "jittor_folder", lambda: folder)
    assert not onednn.provide(PREFIX)  # no library in it: Jittor would download; styleblend then runs without
    (folder / "lib" / "libmkldnn.so").symlink_to(PREFIX / "lib" / "libdnnl.so.2")
    assert onednn.provide(PREFIX) and not folder.is_symlink()


def test_no_wheels_no_onednn(tmp_path, monkeypatch):
    monkeypatch.setattr(onednn, "jittor_folder", lambda: pytest.fail("Jittor's folder touched without the wheels"))
    assert onednn.installed(tmp_path) is None and not onednn.provide(tmp_path)
