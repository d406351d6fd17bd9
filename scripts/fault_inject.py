"""Fault injection: does the test suite notice when a kernel family (or a pass) is broken?

For each kernel family (one module of ``src/ziggurat/ops``) and each mutant below, this runs pytest
with every kernel of that family wrapped to misbehave, and reports which test failed first. A mutant
that no test notices *survives*: the family's behaviour is not pinned by the suite.

Kernel mutants (applied to every kernel the family registers, and to the module attributes that
tests call directly):

- ``values``: float outputs become ``0.5 * y + 1``, integer outputs ``y + 1``, booleans ``~y``;
- ``drop``:   the last output is dropped;
- ``dtype``:  float32 <-> float64, float16 -> float32, int64 <-> int32, bool -> uint8;
- ``axis``:   kernels with an ``axis`` attribute get ``axis + 1`` (its default when absent).

Pass mutant: ``skip`` (the pass returns its input graph unchanged).

Each mutant runs in two stages: the family's own unit tests (fast), then, if it survived, the
whole subset (ops, passes, models, runtime, formats, conformance) with ``-x``. Tests that fail
without any mutant (e.g. someone's work in progress) are deselected first.

Usage::

    python scripts/fault_inject.py                      # every family and pass, every mutant
    python scripts/fault_inject.py --only norm,rnn      # some families
    python scripts/fault_inject.py --mutants values     # some mutants
    python scripts/fault_inject.py --json out.json     # results as JSON too

The module is also the pytest plugin that applies one mutant (``-p fault_inject`` with this folder
on ``PYTHONPATH`` and ``ZIGGURAT_FAULT=kind:target:mutant`` in the environment).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNEL_MUTANTS = ("values", "drop", "dtype", "axis")
PASS_MUTANTS = ("skip",)
SUBSET = [
    "tests/ops",
    "tests/passes",
    "tests/models",
    "tests/runtime",
    "tests/formats",
    "tests/conformance",
    "tests/backends",
    "tests/test_public_api.py",
]
# Passes change graphs, not kernels: their second stage is the tests that compile whole models.
PASS_SUBSET = ["tests/passes", "tests/models", "tests/runtime", "tests/formats", "tests/backends"]
PASS_UNIT = {
    "gradient": ["tests/passes/test_gradient.py"]
}  # else test_<pass>.py or test_fusions.py
# Unit tests of families whose test file is not tests/ops/test_<family>.py.
UNIT_TESTS = {
    "autodiff": ["tests/passes/test_gradient.py"],
    "loss": ["tests/ops/test_pad_cast_loss.py"],
    "cast": ["tests/ops/test_pad_cast_loss.py"],
    "logical": ["tests/ops/test_differential.py"],
    "indexing": ["tests/ops/test_differential.py", "tests/ops/test_tensor.py"],
    "pad": ["tests/ops/test_pad_cast_loss.py"],
    "sort": ["tests/ops/test_tensor.py"],
    "resize": ["tests/ops/test_image.py"],
    "detection": ["tests/ops/test_image.py"],
    "random": ["tests/conformance/test_random_cases.py"],
    "convtranspose": ["tests/ops/test_conv.py"],
    "quant_conv": ["tests/ops/test_quant.py", "tests/ops/test_conv.py"],
    "recurrent_attention": ["tests/ops/test_attention.py"],
    "fused": ["tests/passes/test_fusions.py", "tests/models/test_models_vs_onnxruntime.py"],
    "fused_transformer": [
        "tests/passes/test_fusions.py",
        "tests/models/test_models_vs_onnxruntime.py",
    ],
    "ml.preprocess": ["tests/ops/test_ml.py", "tests/models/test_sklearn_models.py"],
    "ml.forest": ["tests/ops/test_ml.py", "tests/models/test_sklearn_models.py"],
    "ml.linear": ["tests/ops/test_ml.py", "tests/models/test_sklearn_models.py"],
    "ml.svm": ["tests/ops/test_ml.py", "tests/models/test_sklearn_models.py"],
    "ml.trees": ["tests/ops/test_ml.py", "tests/models/test_sklearn_models.py"],
}


# ------------------------------------------------------------------------------ the mutants
def _corrupt(y):
    """``values``: a wrong answer of the right type, shape and dtype."""
    import numpy as np

    if isinstance(y, list):
        return [_corrupt(v) for v in y]
    if not isinstance(y, np.ndarray | np.generic):
        return y
    dt = y.dtype
    if dt == np.bool_:
        return ~y
    if dt.kind in "iu":
        return (y + dt.type(1)).astype(dt)
    if dt.kind in "fc" or "float" in str(dt):  # incl. ml_dtypes' bfloat16 / float8 types
        return (y.astype(np.float64) * 0.5 + 1.0).astype(dt)
    return y


_SWAP = {
    "float32": "float64",
    "float64": "float32",
    "float16": "float32",
    "int64": "int32",
    "int32": "int64",
    "bool": "uint8",
}


def _retype(y):
    """``dtype``: the right values in the wrong dtype."""
    import numpy as np

    if isinstance(y, list):
        return [_retype(v) for v in y]
    if isinstance(y, np.ndarray | np.generic) and str(y.dtype) in _SWAP:
        return y.astype(_SWAP[str(y.dtype)])
    return y


def _wrap(fn, mutant: str, axis_default=None):
    @functools.wraps(fn)
    def mutated(*args, **kwargs):
        if mutant == "axis":
            kwargs["axis"] = kwargs.get("axis", axis_default) + 1
        out = fn(*args, **kwargs)
        if mutant == "values":
            return tuple(_corrupt(y) for y in out)
        if mutant == "dtype":
            return tuple(_retype(y) for y in out)
        if mutant == "drop":
            return tuple(out)[:-1]
        return out

    mutated.__fault__ = mutant
    return mutated


def apply_kernel_mutant(family: str, mutant: str) -> int:
    """Wrap every kernel of ``family`` in the registry (and the module's attributes pointing to
    them) with ``mutant``. Returns how many kernel versions were wrapped."""
    import importlib

    from ziggurat.ops import registry

    registry.all_kernels()  # import every family, so later imports do not re-register
    module = importlib.import_module(f"ziggurat.ops.{family}")
    wrapped: dict[int, object] = {}
    count = 0
    for versions in registry._KERNELS.values():
        for i, k in enumerate(versions):
            if k.module != family:
                continue
            if mutant == "axis":
                default = k.attrs.get("axis", registry.REQUIRED)
                if default is registry.REQUIRED or not isinstance(default, int):
                    continue
                fn = _wrap(k.fn, mutant, default)  # defaults differ per op: one wrapper each
            else:
                fn = wrapped.setdefault(id(k.fn), _wrap(k.fn, mutant))
            for name, value in vars(module).items():
                if value is k.fn:
                    setattr(module, name, fn)
            versions[i] = dataclasses.replace(k, fn=fn)
            count += 1
    return count


def apply_pass_mutant(name: str, mutant: str) -> int:
    """``skip``: the pass module's ``run`` returns the graph it was given."""
    import importlib

    module = importlib.import_module(f"ziggurat.passes.{name}")
    orig = module.run

    @functools.wraps(orig)
    def skipped(graph, *args, **kwargs):
        return graph

    module.run = skipped
    return 1


def families() -> list[str]:
    from ziggurat.ops import registry

    return sorted({k.module for k in registry.all_kernels()})


def passes() -> list[str]:
    folder = ROOT / "src" / "ziggurat" / "passes"
    names = []
    for p in sorted(folder.glob("*.py")):
        if not p.stem.startswith("_") and p.stem != "pipeline":
            if re.search(r"^def run\(", p.read_text(encoding="utf-8"), re.M):
                names.append(p.stem)
    return names


def kernel_mutants_for(family: str) -> list[str]:
    """The mutants that change something in ``family`` (``axis`` only where kernels have one)."""
    from ziggurat.ops import registry

    kernels = [k for k in registry.all_kernels() if k.module == family]
    has_axis = any(isinstance(k.attrs.get("axis"), int) for k in kernels)
    return [m for m in KERNEL_MUTANTS if m != "axis" or has_axis]


# ------------------------------------------------------------------------------ pytest plugin
def pytest_configure(config):
    spec = os.environ.get("ZIGGURAT_FAULT")
    if not spec:
        return
    kind, target, mutant = spec.split(":")
    n = (apply_kernel_mutant if kind == "kernel" else apply_pass_mutant)(target, mutant)
    if n == 0:
        raise RuntimeError(f"fault {spec}: nothing to mutate")


# ------------------------------------------------------------------------------ driver
def _pytest(paths: list[str], fault: str | None, deselect: list[str], workers: int) -> tuple:
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]
    cmd += ["-p", "fault_inject", "-o", "addopts=-rf"]
    if workers > 1:
        cmd += ["-n", str(workers)]
    for d in deselect:
        cmd += ["--deselect", d]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "scripts"), str(ROOT)]))
    env.pop("ZIGGURAT_FAULT", None)
    if fault:
        env["ZIGGURAT_FAULT"] = fault
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            cmd + paths, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
        )
        out, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out, rc = str(exc.stdout or "") + "\nTIMEOUT", -1
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", out, re.M)
    return rc, failed, out, time.monotonic() - t0


def _baseline(workers: int) -> list[str]:
    """Tests failing with no mutant at all (deselected from every mutant run)."""
    t0 = time.monotonic()
    failed = _pytest_all(SUBSET, workers)
    print(f"baseline: {len(failed)} failing test(s) deselected ({time.monotonic() - t0:.0f} s)")
    for f in failed:
        print(f"  {f}", flush=True)
    return failed


def _pytest_all(paths: list[str], workers: int) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=-rf"]
    cmd += ["-n", str(workers)] if workers > 1 else []
    env = dict(os.environ)
    env.pop("ZIGGURAT_FAULT", None)
    proc = subprocess.run(cmd + paths, cwd=ROOT, env=env, capture_output=True, text=True)
    return re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout + proc.stderr, re.M)


def run_mutant(
    fault: str, unit: list[str], deselect: list[str], workers: int, subset: list[str] = SUBSET
) -> dict:
    """Stage 1: the unit tests; stage 2 (if it survived): the whole subset. A failing test counts
    only if it passes again without the mutant (others may be editing the tree, or a test may be
    flaky): otherwise it is deselected and the stage runs again."""
    stages = [("unit", unit), ("subset", subset)] if unit else [("subset", subset)]
    total = 0.0
    skip = list(deselect)
    for stage, paths in stages:
        for _ in range(5):  # at most 5 unconfirmed failures per stage
            # The unit stage is a few seconds: in one process (xdist's start-up costs more).
            rc, failed, out, dt = _pytest(paths, fault, skip, 1 if stage == "unit" else workers)
            total += dt
            if rc in (0, 5):  # passed, or nothing collected
                break
            if "fault " in out and "nothing to mutate" in out:
                return {"fault": fault, "result": "n/a", "seconds": round(total, 1)}
            if not failed:
                return {"fault": fault, "result": "killed", "stage": stage,
                        "by": f"pytest rc {rc} (the run itself failed)", "seconds": round(total, 1)}  # fmt: skip
            clean_rc, _, _, _ = _pytest([failed[0]], None, [], 1)
            if clean_rc == 0:
                return {"fault": fault, "result": "killed", "stage": stage, "by": failed[0],
                        "seconds": round(total, 1)}  # fmt: skip
            print(f"  ({failed[0]} fails without the mutant too: deselected)", flush=True)
            skip.append(failed[0])
    return {"fault": fault, "result": "SURVIVED", "seconds": round(total, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated families/passes (default: all)")
    ap.add_argument("--mutants", help=f"comma-separated, of {KERNEL_MUTANTS + PASS_MUTANTS}")
    ap.add_argument("--no-passes", action="store_true", help="kernel families only")
    ap.add_argument("--no-kernels", action="store_true", help="passes only")
    ap.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the clean run (each kill is still confirmed without the mutant)",
    )
    ap.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (default 2)")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    only = set(args.only.split(",")) if args.only else None
    chosen = set(args.mutants.split(",")) if args.mutants else None
    jobs = []
    for fam in [] if args.no_kernels else families():
        if only is None or fam in only:
            unit = UNIT_TESTS.get(fam) or (
                [f"tests/ops/test_{fam}.py"] if (ROOT / f"tests/ops/test_{fam}.py").exists() else []
            )
            for m in kernel_mutants_for(fam):
                if chosen is None or m in chosen:
                    jobs.append((f"kernel:{fam}:{m}", unit))
    if not args.no_passes:
        for p in passes():
            if only is None or p in only:
                for m in PASS_MUTANTS:
                    if chosen is None or m in chosen:
                        own = f"tests/passes/test_{p}.py"
                        unit = PASS_UNIT.get(p) or (
                            [own] if (ROOT / own).exists() else ["tests/passes/test_fusions.py"]
                        )
                        jobs.append((f"pass:{p}:{m}", unit))
    deselect = [] if args.no_baseline else _baseline(args.workers)
    results = []
    for fault, unit in jobs:
        subset = PASS_SUBSET if fault.startswith("pass:") else SUBSET
        r = run_mutant(fault, unit, deselect, args.workers, subset)
        results.append(r)
        where = f"{r['stage']}: {r['by']}" if r["result"] == "killed" else ""
        print(f"{fault:40s} {r['result']:9s} {r['seconds']:6.1f} s  {where}", flush=True)
    survived = [r["fault"] for r in results if r["result"] == "SURVIVED"]
    killed = sum(r["result"] == "killed" for r in results)
    print(f"\n{killed} of {len(results)} mutants killed; survived: {survived or 'none'}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"deselected": deselect, "results": results}, indent=1)
        )
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
