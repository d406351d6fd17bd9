"""The registry's on-demand source index finds the com.microsoft kernels (ops/contrib_*.py)
without importing every kernel module, and keeps them apart from same-named ops of other domains."""

from __future__ import annotations

import subprocess
import sys

from ziggurat.ops import registry

_CODE = """
from ziggurat.ops import registry
for op in ("SkipLayerNormalization", "Attention", "MatMulNBits", "FusedConv", "QuickGelu", "CDist"):
    k = registry.lookup(op, "com.microsoft", 1)
    assert k is not None and k.module.startswith("contrib_"), (op, k)
assert not registry._all_loaded, "the index should have found them without importing everything"
print("ok")
"""


def test_index_finds_contrib_kernels_without_importing_everything():
    out = subprocess.run([sys.executable, "-c", _CODE], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_domains_stay_apart():
    assert registry.lookup("Gelu", "com.microsoft", 1).module == "contrib_activation"
    assert registry.lookup("Gelu", "", 20).module == "activation"
    assert registry.lookup("Gelu", "ziggurat", 1).module == "fused"
    assert registry.lookup("FusedConv", "com.microsoft", 1).module == "contrib_fused"
    assert registry.lookup("LayerNormalization", "", 13).module == "contrib_norm"
    assert registry.lookup("LayerNormalization", "", 17).module == "norm"
    assert registry.lookup("Attention", "", 23).module == "attention"
    assert registry.lookup("NoSuchOp", "com.microsoft", 1) is None
