"""The one inference path every entry point takes: decode -> check -> run -> encode.

``POST /v2/models/{model}/infer``, ``POST /api/v1/infer``, each message of ``WS /api/v1/stream``
and each item of ``POST /api/v1/batch`` hand their request's JSON object (and binary section) to
:func:`prepare`, which finds the model, decodes the tensors (``codecs``) and validates them with
the check ``InferenceSession.run`` uses (``runtime/validate.py``), and estimates their memory;
:func:`check_budget` refuses what would not fit ``max_request_memory_mb`` (a batch call checks
all its items together); :func:`run` runs the request through the model's scheduler (under its
``parameters.timeout``) and encodes the outputs once. :func:`infer` is the three in a row. Each
entry point only wraps the :class:`Encoded` result in its transport (HTTP body, WebSocket frame,
batch item), so a hostile input meets the same checks wherever it enters.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ziggurat.server import codecs
from ziggurat.server.codecs import InferRequest
from ziggurat.server.errors import HTTPError, bad_request
from ziggurat.server.http import Response

if TYPE_CHECKING:
    from ziggurat.server.app import ZigguratApp
    from ziggurat.server.model import LoadedModel


@dataclass
class Encoded:
    """An answer ready for any transport: the JSON head, binary chunks, non-finite floats."""

    head: dict[str, Any]
    chunks: list[bytes]
    nonfinite: bool

    def http(self) -> Response:
        """The HTTP answer: JSON, or the V2 binary layout with its header length."""
        body, header_len = codecs.encode_response(self.head, self.chunks, self.nonfinite)
        if header_len is None:
            return Response(body, 200, "application/json")
        return Response(
            body,
            200,
            "application/octet-stream",
            {"inference-header-content-length": str(header_len)},
        )

    def frame(self) -> dict[str, Any]:
        """The WebSocket message: a text frame, or 4-byte header length + header + tensors."""
        header = codecs.dumps(self.head, nonfinite=self.nonfinite)
        if not self.chunks:
            return {"type": "websocket.send", "text": header.decode()}
        data = b"".join([struct.pack("<I", len(header)), header, *self.chunks])
        return {"type": "websocket.send", "bytes": data}


def parse(body: bytes, header_length: str | None) -> tuple[Any, memoryview | None]:
    """An HTTP body as (JSON header object, binary section or None); 400 when malformed."""
    header, binary = codecs.split_binary(body, header_length)
    return codecs.loads(header), binary


@dataclass
class Prepared:
    """A decoded, checked request: ready to run, its memory estimated."""

    model: LoadedModel
    ir: InferRequest
    feeds: dict[str, Any]
    wanted: list[codecs.RequestedOutput]
    nbytes: int


async def prepare(
    app: ZigguratApp,
    obj: Any,
    binary: memoryview | None = None,
    *,
    model: str | None = None,
    version: str | None = None,
    json_only: bool = False,
) -> Prepared:
    """Find the model, then decode and check the request (everything before running it).

    ``obj``: the request's JSON object; ``model``/``version`` when the path names them, else the
    body does (/api/v1, WebSocket). The model is looked up before the tensors are decoded, so
    an unknown model is a 404 however malformed its tensors are. ``json_only``: the transport
    cannot carry binary outputs (batch items), so asking for them is a 400.
    """
    if not isinstance(obj, dict):
        raise bad_request("the request body must be a JSON object")
    v1 = model is None
    if v1:
        model, version = codecs.model_ref(obj)
    m = await app.repo.get(model, version)
    ir = codecs.request_from_json(obj, binary, v1=v1)
    if json_only and _wants_binary(ir):
        raise bad_request(
            "binary outputs cannot be returned inside a JSON batch; use /v2/models/{model}/infer "
            "or /api/v1/infer for binary_data outputs"
        )
    feeds = m.check_feeds(ir.inputs)
    wanted = m.resolve_outputs(ir.outputs)
    return Prepared(m, ir, feeds, wanted, m.estimate_bytes(feeds, [w.name for w in wanted]))


def check_budget(app: ZigguratApp, nbytes: int, what: str) -> None:
    """413 before running when the tensors of ``what`` would not fit max_request_memory_mb."""
    budget = app.config.max_request_memory_mb * 2**20
    if nbytes > budget:
        raise HTTPError(
            413,
            f"{what} needs at least {nbytes / 2**20:.1f} MiB for its input and output tensors, "
            f"over max_request_memory_mb ({app.config.max_request_memory_mb:g}); send fewer or "
            "smaller tensors, or raise the limit",
        )


async def run(p: Prepared, *, group: object | None = None, reply_id: Any = None) -> Encoded:
    """Run a prepared request through its model's scheduler and encode the outputs.

    ``group``: items of one /api/v1/batch call (they may stack). ``reply_id``: the id to echo
    when it is not the V2 string id (WebSocket ids may be integers).
    """
    m, ir = p.model, p.ir
    names = [w.name for w in p.wanted]
    if ir.timeout_us:
        try:
            async with asyncio.timeout(ir.timeout_us / 1e6):
                arrays = await m.infer(p.feeds, names, group)
        except TimeoutError:
            raise HTTPError(
                504,
                f"request timed out after its parameters.timeout of {ir.timeout_us} us; "
                "its work was cancelled",
            ) from None
    else:
        arrays = await m.infer(p.feeds, names, group)
    tensors, chunks, nonfinite = codecs.encode_outputs(
        list(zip(p.wanted, arrays)), ir.binary_output
    )
    head: dict[str, Any] = {"model_name": m.name, "model_version": str(m.version)}
    rid = reply_id if reply_id is not None else ir.id
    if rid is not None:
        head["id"] = rid
    head["outputs"] = tensors
    return Encoded(head, chunks, nonfinite)


async def infer(
    app: ZigguratApp,
    obj: Any,
    binary: memoryview | None = None,
    *,
    model: str | None = None,
    version: str | None = None,
    reply_id: Any = None,
) -> Encoded:
    """One request, start to end: :func:`prepare`, the memory budget, :func:`run`."""
    p = await prepare(app, obj, binary, model=model, version=version)
    check_budget(app, p.nbytes, "this request")
    return await run(p, reply_id=reply_id)


def _wants_binary(ir: InferRequest) -> bool:
    if ir.binary_output and not ir.outputs:
        return True
    return any(o.binary or (o.binary is None and ir.binary_output) for o in (ir.outputs or []))
