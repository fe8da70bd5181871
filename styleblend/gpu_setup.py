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
"""
from __future__ import annotations

import glob
import importlib.util
import os
import platform
import sys
from pathlib import Path
from typing import List, Tuple

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


def main() -> int:
    root = jittor_root()
    changes = apply_text_fixes(root) + remove_cudnn_rnn(root) + expose_cudnn_headers()
    print(f"gpu-setup: Jittor at {root}")
    for change in changes:
        print("  " + change)
    print("  nothing to change (already set up)" if not changes else f"  {len(changes)} change(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
