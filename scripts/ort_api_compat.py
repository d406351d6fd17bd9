"""Run onnxruntime's own Python API test file against onnxruntime and against Ziggurat.

onnxruntime's ``onnxruntime/test/python/onnxruntime_test_python.py`` (with its ``helper.py`` and the
``testdata/*.onnx`` models it loads) is not part of this repository: fetch it from onnxruntime's
sources into a folder of its own, laid out as::

    DIR/onnxruntime_test_python.py
    DIR/helper.py
    DIR/testdata/mul_1.onnx, mnist.onnx, ...

then::

    .venv/bin/python scripts/ort_api_compat.py DIR

runs the file twice, each in a fresh process started in a scratch copy of DIR (the tests write
files next to themselves): once with the real ``onnxruntime``, once with ``onnxruntime`` and every
``onnxruntime.*`` module aliased to ``ziggurat`` / ``ziggurat.*`` (so the file's
``import onnxruntime as onnxrt`` is ``import ziggurat as onnxrt``). It prints both pass counts, the
tests that pass with onnxruntime but not with Ziggurat, and each one's reason.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

# Runs inside the child process: alias onnxruntime -> ziggurat when asked, run the file's tests,
# write one JSON line per test.
_CHILD = r"""
import importlib, importlib.abc, importlib.util, json, sys, traceback, unittest

engine, test_file, out_path = sys.argv[1:4]
if engine == "ziggurat":
    class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        # onnxruntime.X.Y -> ziggurat.X.Y: the same module object under both names.
        def find_spec(self, name, path=None, target=None):
            if name == "onnxruntime" or name.startswith("onnxruntime."):
                return importlib.util.spec_from_loader(name, self)
            return None

        def create_module(self, spec):
            return importlib.import_module("ziggurat" + spec.name[len("onnxruntime"):])

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, _Alias())

sys.path.insert(0, ".")
spec = importlib.util.spec_from_file_location("ort_api_test", test_file)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
suite = unittest.defaultTestLoader.loadTestsFromModule(mod)


class _Result(unittest.TestResult):
    def __init__(self):
        super().__init__()
        self.rows = []

    def _row(self, test, status, err=None):
        reason = ""
        if err is not None:
            exc = err[1]
            tb = traceback.extract_tb(err[2])
            where = f"{tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} @ {where}"
        self.rows.append({"test": test.id().split(".", 1)[1], "status": status, "reason": reason})

    def addSuccess(self, test):
        self._row(test, "pass")

    def addFailure(self, test, err):
        self._row(test, "fail", err)

    def addError(self, test, err):
        self._row(test, "error", err)

    def addSkip(self, test, reason):
        self.rows.append({"test": test.id().split(".", 1)[1], "status": "skip", "reason": reason})


result = _Result()
suite.run(result)
with open(out_path, "w") as f:
    json.dump(result.rows, f)
"""


def run_engine(engine: str, src_dir: str, timeout: float) -> list[dict]:
    """Run the test file once with ``engine`` in a scratch copy of ``src_dir``; one row per test."""
    with tempfile.TemporaryDirectory(prefix=f"ortapi-{engine}-") as tmp:
        work = os.path.join(tmp, "python")
        shutil.copytree(src_dir, work)
        out = os.path.join(tmp, "result.json")
        child = os.path.join(tmp, "child.py")
        with open(child, "w") as f:
            f.write(_CHILD)
        cmd = [sys.executable, child, engine, "onnxruntime_test_python.py", out]
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout)
        if not os.path.exists(out):
            sys.exit(f"{engine}: the test run died (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
        with open(out) as f:
            return json.load(f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("dir", help="folder with onnxruntime_test_python.py, helper.py, testdata/")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per engine (600)")
    ap.add_argument("--json", help="also write both engines' rows to this file")
    args = ap.parse_args()
    if not os.path.isfile(os.path.join(args.dir, "onnxruntime_test_python.py")):
        sys.exit(f"{args.dir} has no onnxruntime_test_python.py; see this script's --help")
    rows = {e: run_engine(e, args.dir, args.timeout) for e in ("onnxruntime", "ziggurat")}
    status = {e: {r["test"]: r for r in rs} for e, rs in rows.items()}
    ort_pass = sorted(t for t, r in status["onnxruntime"].items() if r["status"] == "pass")
    zg = status["ziggurat"]
    zg_pass = [t for t in ort_pass if zg.get(t, {}).get("status") == "pass"]
    print(f"onnxruntime: {len(ort_pass)} of {len(rows['onnxruntime'])} tests pass")
    print(f"ziggurat:    {len(zg_pass)} of those {len(ort_pass)} pass")
    for t in ort_pass:
        r = zg.get(t, {"status": "missing", "reason": ""})
        if r["status"] != "pass":
            print(f"  {r['status']:5} {t}: {r['reason']}")
    extra = [t for t, r in zg.items() if r["status"] == "pass" and t not in ort_pass]
    if extra:
        print(
            f"passing with ziggurat only (skipped or failing with onnxruntime): {', '.join(extra)}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
