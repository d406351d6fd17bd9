"""Every CUDA source of the CUDA backend compiles (nvcc -ptx), on machines without a GPU too.

CuPy compiles the same sources with NVRTC at first launch on a GPU; nvcc parses the same CUDA C++,
so a syntax or type error shows here, not first on a lent GPU. The elementwise bodies are checked
inside a plain kernel with the same parameter names (``elementwise_check_source``).
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from ziggurat.backends.cuda import sources

NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc (CUDA toolkit) is not installed")
DTYPES = [np.float32, np.float16]


def _compile(src: str, tmp_path) -> None:
    cu = tmp_path / "k.cu"
    cu.write_text(src)
    out = subprocess.run(
        [NVCC, "-ptx", "-arch=sm_80", "-o", str(tmp_path / "k.ptx"), str(cu)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "k.ptx").read_text().count(".entry") == 1


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f16"])
@pytest.mark.parametrize("name", sorted(sources.RAW))
def test_raw_kernels_compile(name, dtype, tmp_path):
    _compile(sources.raw_source(name, dtype), tmp_path)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f16"])
@pytest.mark.parametrize("name", sorted(sources.ELEMENTWISE))
def test_elementwise_bodies_compile(name, dtype, tmp_path):
    _compile(sources.elementwise_check_source(name, dtype), tmp_path)


def test_a_broken_source_fails_the_check(tmp_path):
    broken = sources.raw_source("skip_layer_norm", np.float32).replace("rsqrtf", "rsqrtff")
    with pytest.raises(AssertionError, match="rsqrtff"):
        _compile(broken, tmp_path)
