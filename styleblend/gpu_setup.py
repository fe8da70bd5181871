"""Make Jittor 1.3.11 build on a CUDA 13 / cuDNN 9 machine (H100/H200), idempotently.

Run once per machine, before the first GPU import: ``make gpu-setup`` (= ``python -m styleblend.gpu_setup``).
It edits the *installed* Jittor package (found without importing it) and prints every change; running it
again changes nothing. The fixes, each measured on an H200 with CUDA 13.0 and cuDNN 9:

1. ``extern/cuda/inc/helper_cuda.h`` reads ``cudaDeviceProp.computeMode`` / ``.clockRate``, removed in CUDA 13:
   replaced by constants (compute mode "default", a nominal clock) — only used to pick the fastest device.
2. ``other/code_softmax.py`` uses ``cub::Max()``, removed from CUB in CUDA 13: ``::cuda::maximum<>()``.
3. ``compiler.py`` forces ``-std=c++14`` for g++ and for nvcc ≥ 11.4; CUDA 13's headers need C++17.
4. cuDNN 9: Jittor's RNN ops use the cuDNN 8 RNN API, so they are removed; its dlopen list names the cuDNN 8
   sub-libraries, replaced by ``libcudnn_ops.so`` / ``libcudnn_cnn.so``; and Debian/Ubuntu's cuDNN puts
   ``cudnn*.h`` in ``/usr/include/<arch>-linux-gnu``, which Jittor does not search, so they are linked into
   ``/usr/include``.
The remaining flags (``use_cutt=0 use_cutlass=0 use_nccl=0 nvcc_path=...``) are set by ``styleblend.runtime``
when ``STYLEBLEND_DEVICE=cuda``.

``--conv-accumulation float`` (``half`` undoes it) makes float16 and bfloat16 convolutions accumulate in float32,
cuDNN's "pseudo-half" configuration, which PyTorch asks for; Jittor asks for half accumulation ("true half"), for
which cuDNN has fewer engines. Jittor rebuilds the convolution ops at its next start. Measure it before making it
the default (``bench/run.sh``: the float16 UNet step and image).
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import platform
import sys
from pathlib import Path
from typing import List, Optional, Tuple

TEXT_FIXES: List[Tuple[str, str, str]] = [
    ("extern/cuda/inc/helper_cuda.h", "deviceProp.computeMode", "cudaComputeModeDefault"),
    ("extern/cuda/inc/helper_cuda.h", "deviceProp.clockRate", "1000000"),
    ("other/code_softmax.py", "cub::Max()", "::cuda::maximum<>()"),
    ("compiler.py", 'cc_flags += " -Wall -Wno-unknown-pragmas -std=c++14 -fPIC "',
     'cc_flags += " -Wall -Wno-unknown-pragmas -std=c++17 -fPIC "'),
    ("compiler.py", '"-std=c++17", "-std=c++14 -Xcompiler -std:c++14"', '"-std=c++17", "-std=c++17"'),
    ("compile_extern.py",
     'libs = ["libcudnn_ops_infer.so", "libcudnn_ops_train.so", "libcudnn_cnn_infer.so", "libcudnn_cnn_train.so"]',
     'libs = ["libcudnn_ops.so", "libcudnn_cnn.so"]'),
]
CONV_OPS = [f"extern/cuda/cudnn/ops/cudnn_conv{dims}{part}_op.cc"
            for dims in ("", "3d") for part in ("", "_backward_x", "_backward_w")]
CONV_COMPUTE = {"half": "CUDNN_CROSS_CORRELATION, getDataType<Ty>()",  # the convolution descriptor's compute type
                "float": "CUDNN_CROSS_CORRELATION, getComputeType<Ty>()"}
CUDNN_WRAPPER = "extern/cuda/cudnn/inc/cudnn_wrapper.h"
COMPUTE_TYPE = """
// the compute type of a convolution on T_ELEM data: float for half and bfloat16 (cuDNN's pseudo-half configuration)
template <typename T_ELEM> __inline__ cudnnDataType_t getComputeType() {
    cudnnDataType_t data = getDataType<T_ELEM>();
    return data == CUDNN_DATA_HALF || data == CUDNN_DATA_BFLOAT16 ? CUDNN_DATA_FLOAT : data;
}
"""
CUDNN_RNN_FILES = ["extern/cuda/cudnn/ops/cudnn_rnn*", "extern/cuda/cudnn/src/cudnn_rnn_descriptor.cc",
                   "extern/cuda/cudnn/inc/cudnn_rnn_descriptor.h"]


def jittor_root() -> Path:
    """The installed Jittor package folder, located without importing Jittor."""
    spec = importlib.util.find_spec("jittor")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("gpu-setup: Jittor is not installed in this Python environment")
    return Path(list(spec.submodule_search_locations)[0])


def apply_text_fixes(root: Path) -> List[str]:
    changes = []
    for rel, old, new in TEXT_FIXES:
        path = root / rel
        text = path.read_text()
        if old in text:
            path.write_text(text.replace(old, new))
            changes.append(f"{rel}: {old!r} -> {new!r}")
    return changes


def remove_cudnn_rnn(root: Path) -> List[str]:
    changes = []
    for pattern in CUDNN_RNN_FILES:
        for name in glob.glob(str(root / pattern)):
            os.remove(name)
            changes.append(f"removed {Path(name).relative_to(root)} (cuDNN 8 RNN API)")
    return changes


def expose_cudnn_headers(include: Path = Path("/usr/include")) -> List[str]:
    arch_dir = include / f"{platform.machine()}-linux-gnu"
    changes = []
    for header in sorted(arch_dir.glob("cudnn*.h")):
        link = include / header.name
        if not link.exists():
            link.symlink_to(header)
            changes.append(f"linked {link} -> {header}")
    return changes


def set_conv_accumulation(root: Path, mode: str) -> List[str]:
    """Make Jittor's cuDNN convolutions (2-D and 3-D, forward and both backwards) accumulate half-precision data in
    ``mode`` ("half": Jittor's own, "float": PyTorch's)."""
    changes = []
    wrapper = root / CUDNN_WRAPPER
    text = wrapper.read_text()
    if mode == "float" and "getComputeType" not in text:
        wrapper.write_text(text.replace("\n} // jittor", COMPUTE_TYPE + "\n} // jittor"))
        changes.append(f"{CUDNN_WRAPPER}: getComputeType<T>() added")
    other = CONV_COMPUTE["half" if mode == "float" else "float"]
    for rel in CONV_OPS:
        path = root / rel
        text = path.read_text()
        if other in text:
            path.write_text(text.replace(other, CONV_COMPUTE[mode]))
            changes.append(f"{rel}: convolutions accumulate in {mode}")
    return changes


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m styleblend.gpu_setup", description=__doc__.splitlines()[0])
    parser.add_argument("--conv-accumulation", choices=sorted(CONV_COMPUTE),
                        help="what half-precision convolutions accumulate in (default: leave it as it is)")
    args = parser.parse_args(argv)
    root = jittor_root()
    changes = apply_text_fixes(root) + remove_cudnn_rnn(root) + expose_cudnn_headers()
    if args.conv_accumulation:
        changes += set_conv_accumulation(root, args.conv_accumulation)
    print(f"gpu-setup: Jittor at {root}")
    for change in changes:
        print("  " + change)
    print("  nothing to change (already set up)" if not changes else f"  {len(changes)} change(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
