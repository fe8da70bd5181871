"""styleblend.gpu_setup's optional convolution fix, on copies of the installed Jittor's own source files (so a
pattern that stopped matching Jittor's text fails here rather than changing nothing on a GPU machine)."""
import shutil

import pytest

from styleblend.gpu_setup import CONV_COMPUTE, CONV_OPS, CUDNN_WRAPPER, jittor_root, set_conv_accumulation


@pytest.fixture
def jittor_copy(tmp_path):
    for rel in CONV_OPS + [CUDNN_WRAPPER]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(jittor_root() / rel, tmp_path / rel)
    return tmp_path


def _texts(root):
    return {rel: (root / rel).read_text() for rel in CONV_OPS + [CUDNN_WRAPPER]}


def test_float_accumulation_is_set_in_every_convolution_undone_and_idempotent(jittor_copy):
    original = _texts(jittor_copy)
    assert len(set_conv_accumulation(jittor_copy, "float")) == len(CONV_OPS) + 1
    floats = _texts(jittor_copy)
    for rel in CONV_OPS:
        assert CONV_COMPUTE["float"] in floats[rel] and CONV_COMPUTE["half"] not in floats[rel], rel
    assert floats[CUDNN_WRAPPER].count("cudnnDataType_t getComputeType") == 1
    assert floats[CUDNN_WRAPPER].rstrip().endswith("} // jittor")
    assert set_conv_accumulation(jittor_copy, "float") == [], "a second run changes nothing"

    assert len(set_conv_accumulation(jittor_copy, "half")) == len(CONV_OPS)
    halves = _texts(jittor_copy)
    assert all(halves[rel] == original[rel] for rel in CONV_OPS), "half is Jittor's own text again"
    assert len(set_conv_accumulation(jittor_copy, "float")) == len(CONV_OPS), "the helper is not added twice"
    assert _texts(jittor_copy) == floats
