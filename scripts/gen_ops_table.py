"""Generate docs/operators.md: every operator the installed onnx package defines (ai.onnx,
ai.onnx.ml, ai.onnx.preview, ai.onnx.preview.training), its spec versions, the versions Ziggurat
has kernels for, and the dtypes Ziggurat was actually seen to run.

    python scripts/gen_ops_table.py                     # (re)write docs/operators.md (~1 min)
    python scripts/gen_ops_table.py --check             # exit 1 if docs/operators.md is stale
    python scripts/gen_ops_table.py --check --ops-only  # compare only the set of ops with kernels

How dtypes are determined (nothing is claimed that was not run):

* **Probe.** For ops whose inputs are cheap to generate (elementwise, reductions, shape and
  sequence ops, simple ai.onnx.ml ops: the generic rule in ``_generic`` plus ``RECIPES``), a
  single-node model with tiny inputs is built for every tensor dtype the spec allows, run by
  Ziggurat, and compared (values, dtype, shape) with onnxruntime, or with onnx's
  ReferenceEvaluator where onnxruntime has no kernel for the dtype or disagrees. A reference
  answer only counts if its dtypes and shapes are the ones onnx shape inference gives, and a
  probe only counts for an op if onnxruntime runs it for at least one dtype, so a malformed probe
  is never held against Ziggurat.
* **Conformance.** Every op's non-``_expanded`` ONNX node conformance cases are run through
  Ziggurat; ops that are not probed show "per spec (conformance-tested: ...)" only when all their
  cases pass, with the dtypes those cases feed.

Needs the dev dependencies (onnx, onnxruntime).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import sys
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "operators.md"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests" / "conformance"))
sys.path.insert(0, str(ROOT / "scripts"))

import _ops_probe  # noqa: E402  (scripts/ is not a package)

DOMAINS = ("ai.onnx", "ai.onnx.ml", "ai.onnx.preview", "ai.onnx.preview.training")
NO_KERNEL = "—"
CASE_TIMEOUT_S = 60
DTYPE_ORDER = (
    "float double float16 bfloat16 int8 int16 int32 int64 uint8 uint16 uint32 uint64 bool string "
    "complex64 complex128 float8e4m3fn float8e4m3fnuz float8e5m2 float8e5m2fnuz float8e8m0 "
    "float6e2m3 float6e3m2 float4e2m1 int4 uint4 int2 uint2"
).split()


def _dtype_key(name: str) -> tuple[int, str]:
    return (DTYPE_ORDER.index(name) if name in DTYPE_ORDER else len(DTYPE_ORDER), name)


# -- the spec and the registry --------------------------------------------------------------------
@dataclass
class OpRow:
    domain: str
    name: str
    spec_versions: list[int]
    deprecated: bool
    schema: object  # the latest onnx.defs.OpSchema
    kernel_versions: list[int] = field(default_factory=list)
    kernel_where: str = ""  # "ops file:function" of each kernel version, see kernel_places
    probe: dict[str, str] | None = None  # dtype -> "ok" | "unverified" | "fail"
    conformance: tuple[int, int, list[str]] = (0, 0, [])  # passed, total, dtypes of passing cases

    @property
    def covered(self) -> list[int]:
        """Spec versions a kernel serves: a kernel ``since=N`` serves every version from N up."""
        first = self.kernel_versions[0] if self.kernel_versions else float("inf")
        return [v for v in self.spec_versions if v >= first]


def _domain(d: str) -> str:
    return d or "ai.onnx"


def spec_ops() -> dict[tuple[str, str], OpRow]:
    """Every op of the spec domains, keyed (domain, name), with its since_version list."""
    import onnx.defs

    rows: dict[tuple[str, str], OpRow] = {}
    for s in sorted(onnx.defs.get_all_schemas_with_history(), key=lambda s: s.since_version):
        key = (_domain(s.domain), s.name)
        if key[0] in DOMAINS:
            row = rows.setdefault(key, OpRow(key[0], s.name, [], False, s))
            row.spec_versions.append(s.since_version)
            row.schema, row.deprecated = s, s.deprecated
    return rows


def _where(k) -> str:
    """Where a kernel is written: its file under src/ziggurat/ops and its function name."""
    path = k.fn.__module__.removeprefix("ziggurat.ops.").replace(".", "/")
    return f"{path}.py:{k.fn.__name__}"


def kernel_places() -> dict[tuple[str, str], str]:
    """The *Kernel* cell per (domain, op): each version's file:function, in version order."""
    from ziggurat.ops.registry import all_kernels

    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    for k in all_kernels():
        if not k.domain.startswith("test."):
            out[(_domain(k.domain), k.op_type)].append(f"`{_where(k)}`")
    return {key: ", ".join(v) for key, v in out.items()}


def kernel_ops() -> dict[tuple[str, str], list[int]]:
    """Registered kernel versions, keyed (domain, op)."""
    from ziggurat.ops.registry import all_kernels

    out: dict[tuple[str, str], list[int]] = defaultdict(list)
    for k in all_kernels():
        if k.domain.startswith("test."):  # kernels the test suite registers for itself
            continue
        out[(_domain(k.domain), k.op_type)].append(k.since)
    return {key: sorted(v) for key, v in out.items()}


# -- conformance ----------------------------------------------------------------------------------
def _case_ops(name: str, model) -> list[tuple[str, str]]:
    """The op(s) a conformance case tests: its node's op, or the ops named in the case name."""
    ops = sorted({(_domain(n.domain), n.op_type) for n in model.graph.node})
    named = [o for o in ops if o[1].lower() in name.replace("_", "")]
    return named if len(ops) > 1 and named else ops


def _case_dtype(model) -> str:
    """The element type of the case's first fed input (its first output if it has no input)."""
    import onnx

    inits = {t.name for t in model.graph.initializer}
    values = [v for v in model.graph.input if v.name not in inits] or list(model.graph.output)
    t = values[0].type if values else None
    while t is not None and not t.HasField("tensor_type"):
        kind = t.WhichOneof("value")
        t = getattr(t, kind).elem_type if kind in ("sequence_type", "optional_type") else None
    if t is None:
        return "non-tensor"
    return onnx.helper.tensor_dtype_to_string(t.tensor_type.elem_type)[12:].lower()


@contextlib.contextmanager
def _time_limit(seconds: int):
    def on_alarm(signum, frame):
        raise TimeoutError(f"ran over {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def conformance(rows: dict[tuple[str, str], OpRow], verbose: bool = False) -> None:
    """Run each op's non-expanded node cases through Ziggurat; fill ``row.conformance``."""
    from runner import node_cases, run_node_case

    results: dict[tuple[str, str], list] = defaultdict(lambda: [0, 0, set()])
    for name, case in sorted(node_cases().items()):
        if re.search(r"_expanded(_ver\d+)?$", name):
            continue  # those run the op's function body, made of other ops
        ops = [o for o in _case_ops(name, case.model) if o in rows]
        ok = True
        try:
            with _time_limit(CASE_TIMEOUT_S), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                run_node_case(name)
        except Exception as exc:
            ok = False
            if verbose:
                print(f"  conformance FAIL {name}: {type(exc).__name__}: {str(exc)[:200]}")
        for o in ops:
            results[o][0] += ok
            results[o][1] += 1
            if ok:
                results[o][2].add(_case_dtype(case.model))
    for key, (passed, total, dtypes) in results.items():
        rows[key].conformance = (passed, total, sorted(dtypes, key=_dtype_key))


# -- rendering ------------------------------------------------------------------------------------
def _dtype_cells(row: OpRow) -> tuple[str, str]:
    if not row.kernel_versions:
        return NO_KERNEL, ""
    passed, total, dtypes = row.conformance
    if row.probe is None:
        if total and passed == total:
            return f"per spec (conformance-tested: {', '.join(dtypes)})", "not probed"
        return "not checked", "not probed"
    order = sorted(row.probe, key=_dtype_key)
    ran = [
        t + ("†" if row.probe[t] == "unverified" else "") for t in order if row.probe[t] != "fail"
    ]
    failed = [t for t in order if row.probe[t] == "fail"]
    return ", ".join(ran) or "none", ("probe fails: " + ", ".join(failed)) if failed else ""


def _row_line(row: OpRow) -> str:
    dtypes, notes = _dtype_cells(row)
    cells = [
        row.domain,
        row.name + (" (deprecated)" if row.deprecated else ""),
        ", ".join(map(str, row.spec_versions)),
        ", ".join(map(str, row.kernel_versions)) or NO_KERNEL,
        row.kernel_where,
        ", ".join(map(str, row.covered)) or NO_KERNEL,
        "yes" if row.spec_versions[-1] in row.covered else "no",
        dtypes,
        notes,
        "{}/{}".format(*row.conformance[:2]) if row.conformance[1] else "",
    ]
    return "| " + " | ".join(cells) + " |"


LEGEND = """\
Columns: *Kernels (since)* are the registered kernel versions and *Kernel* the file (under
`src/ziggurat/ops/`) and function of each; a kernel `since=N` serves every
spec version from N up to the next kernel, so *Versions served* lists the spec versions that have
one, and *Latest* says whether the op's newest version is among them. *Dtypes run* lists the
element types (of the op's first input; `Where`: of X) for which a generated single-node probe
ran on Ziggurat with values, dtype and shape equal to onnxruntime's, or to onnx's
ReferenceEvaluator's where onnxruntime has no kernel for the type or disagrees; † marks types that
ran with the spec's output dtype but that no reference engine runs, so their values are
unchecked. Ops without a generated probe show "per spec (conformance-tested: ...)" when all their
node conformance cases pass (with the element types those cases feed) and "not checked"
otherwise. *Conformance* is passed/total of the op's node conformance cases (not `_expanded`)."""


def render(
    rows: dict[tuple[str, str], OpRow],
    extra: dict[tuple[str, str], list[int]],
    places: dict[tuple[str, str], str],
) -> str:
    import onnx
    import onnxruntime

    ordered = sorted(rows.values(), key=lambda r: (DOMAINS.index(r.domain), r.name))
    with_k = [r for r in ordered if r.kernel_versions]
    missing = [
        f"{r.domain}::{r.name}" + (" (deprecated)" if r.deprecated else "")
        for r in ordered
        if not r.kernel_versions
    ]
    per_domain = ", ".join(f"{d}: {sum(r.domain == d for r in ordered)}" for d in DOMAINS)
    lines = [
        "# Operators",
        "",
        "<!-- Generated by scripts/gen_ops_table.py; do not edit by hand. -->",
        "",
        f"Spec: onnx {onnx.__version__}; dtype probes compared with onnxruntime "
        f"{onnxruntime.__version__} and onnx's ReferenceEvaluator.",
        "",
        "## Summary",
        "",
        f"- Ops in the spec: **{len(ordered)}** ({per_domain}; "
        f"{sum(r.deprecated for r in ordered)} deprecated)",
        f"- Ops with kernels: **{len(with_k)}**; serving the op's latest version: "
        f"{sum(r.spec_versions[-1] in r.covered for r in with_k)}",
        f"- Ops without a kernel ({len(missing)}): {', '.join(missing) or 'none'}"
        + (
            " — run by a compile-time pass instead (passes/gradient.py expands it into its "
            "backward graph)"
            if missing == ["ai.onnx.preview.training::Gradient"]
            else ""
        ),
        f"- Ops whose dtypes were probed: {sum(r.probe is not None for r in ordered)}",
        f"- Node conformance cases of these ops: {sum(r.conformance[0] for r in ordered)}/{sum(r.conformance[1] for r in ordered)} pass",
        "",
        LEGEND,
        "",
        "## Table",
        "",
        "| Domain | Op | Spec versions | Kernels (since) | Kernel | Versions served | Latest "
        "| Dtypes run | Notes | Conformance |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(_row_line(r) for r in ordered),
    ]
    if extra:
        lines += ["", "## Kernels for ops outside these domains", ""]
        lines += ["| Domain | Op | Kernels (since) | Kernel |", "|---|---|---|---|"]
        lines += [
            f"| {d} | {op} | {', '.join(map(str, v))} | {places[(d, op)]} |"
            for (d, op), v in sorted(extra.items())
        ]
    return "\n".join(lines) + "\n"


def build(verbose: bool = False) -> str:
    """The full text of docs/operators.md (runs the probes and the conformance cases)."""
    rows, kernels, places = spec_ops(), kernel_ops(), kernel_places()
    for key, versions in kernels.items():
        if key in rows:
            rows[key].kernel_versions = versions
            rows[key].kernel_where = places[key]
    for row in rows.values():
        row.probe = _ops_probe.probe(row, verbose)
    conformance(rows, verbose)
    return render(rows, {k: v for k, v in kernels.items() if k not in rows}, places)


def kernels_in_doc(text: str) -> dict[tuple[str, str], str]:
    """(domain, op) -> *Kernel* cell of every table row of a generated doc that has a kernel."""
    found = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| ") or len(cells) < 4 or cells[0] == "Domain":
            continue
        versions, where = (cells[2], cells[3]) if len(cells) == 4 else (cells[3], cells[4])
        if versions != NO_KERNEL:
            found[(cells[0], cells[1].removesuffix(" (deprecated)"))] = where
    return found


def ops_with_kernels_in_doc(text: str) -> set[tuple[str, str]]:
    """(domain, op) of every table row of a generated doc whose kernel column is not empty."""
    return set(kernels_in_doc(text))


def check_ops_only(path: Path) -> list[str]:
    """Problems (empty if none) between the doc's set of ops with kernels and the registry's."""
    if not path.exists():
        return [f"{path} does not exist"]
    doc, places = kernels_in_doc(path.read_text()), kernel_places()
    in_doc, actual = set(doc), set(places)
    return (
        [f"kernel for {d}::{op} is not in {path.name}" for d, op in sorted(actual - in_doc)]
        + [
            f"{path.name} lists a kernel for {d}::{op} that is not registered"
            for d, op in sorted(in_doc - actual)
        ]
        + [
            f"{path.name} says {d}::{op} is written in {doc[(d, op)]}, the registry: {places[(d, op)]}"
            for d, op in sorted(in_doc & actual)
            if doc[(d, op)] != places[(d, op)]
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the doc is stale")
    ap.add_argument(
        "--ops-only",
        action="store_true",
        help="with --check: compare only the ops with kernels and where each is written (fast)",
    )
    ap.add_argument("--output", type=Path, default=DOC, help="file to write or check")
    ap.add_argument("-v", "--verbose", action="store_true", help="print probe and case failures")
    args = ap.parse_args(argv)
    fix = "regenerate it: python scripts/gen_ops_table.py"
    if args.check and args.ops_only:
        problems = check_ops_only(args.output)
        print(
            "\n".join(problems + [fix])
            if problems
            else f"{args.output}: ops with kernels up to date"
        )
        return 1 if problems else 0
    text = build(args.verbose)
    if args.check:
        stale = not args.output.exists() or args.output.read_text() != text
        print(f"{args.output} is stale; {fix}" if stale else f"{args.output} is up to date")
        return int(stale)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
