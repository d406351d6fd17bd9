"""The registry's module index (ops/_index.py) and the kernel files agree.

The registry imports only the modules its index names for an op; a kernel added to a module the
index doesn't list for its op would be found only through the import-everything fallback, and a
moved kernel would leave a stale entry. The index is generated from the registrations
(scripts/gen_ops_index.py): this test regenerates it and compares.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen_ops_index.py"


def _gen():
    spec = importlib.util.spec_from_file_location("gen_ops_index", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_index_matches_the_registrations():
    gen = _gen()
    current = gen.INDEX.read_text(encoding="utf-8")
    assert current == gen.render(), "ops/_index.py is stale: run python scripts/gen_ops_index.py"


def test_every_indexed_op_resolves_from_its_listed_modules_alone():
    """In a fresh interpreter, looking an op up imports only its indexed modules and finds it."""
    code = (
        "import sys\n"
        "from ziggurat.ops import registry\n"
        "from ziggurat.ops._index import INDEX\n"
        "for op in ('TopK', 'Trilu', 'Col2Im', 'ReverseSequence', 'Dropout', 'CumSum',\n"
        "           'TreeEnsembleClassifier'):\n"
        "    domain = 'ai.onnx.ml' if op.startswith('Tree') else ''\n"
        "    assert registry.lookup(op, domain, 30) is not None, op\n"
        "    assert not registry._all_loaded, f'{op}: fell back to importing everything'\n"
        "loaded = {m.removeprefix('ziggurat.ops.') for m in sys.modules\n"
        "          if m.startswith('ziggurat.ops.')}\n"
        "print(sorted(loaded))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert "'sort'" in out and "'ml.trees'" in out and "'indexing'" in out
    assert "'resize'" not in out  # an unrelated family stays unimported


def test_check_reports_a_stale_index(tmp_path, monkeypatch, capsys):
    gen = _gen()
    stale = tmp_path / "_index.py"
    stale.write_text(gen.render().replace('"TopK": ("sort",),', '"TopK": ("tensor",),'))
    monkeypatch.setattr(gen, "INDEX", stale)
    assert gen.main(["--check"]) == 1
    assert "stale" in capsys.readouterr().err
