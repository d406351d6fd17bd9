"""The one inference path every entry point takes: decode -> check -> run -> encode.

``POST /v2/models/{model}/infer``, ``POST /api/v1/infer``, each item of ``POST /api/v1/batch``
and each message of ``WS /api/v1/stream`` decode their body into an :class:`InferRequest`
(``codecs``), then call :func:`infer`, which finds the model, validates the feeds with the
validation ``InferenceSession.run`` uses (``runtime/validate.py``), runs them through the
model's scheduler (under the request's ``parameters.timeout``), and encodes the outputs once.
Each entry point only wraps the :class:`Encoded` result in its transport (HTTP body, WebSocket
frame, batch item), so a hostile input meets the same checks wherever it enters.
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


def decode(
    body: bytes, header_length: str | None, *, model: str | None = None, v1: bool = False
) -> InferRequest:
    """An HTTP body (JSON or V2 binary extension) as a request; ``model`` from the path."""
    ir = codecs.parse_infer_request(body, header_length, v1=v1)
    if model is not None:
        ir.model = model
    return ir


async def infer(
    app: ZigguratApp,
    ir: InferRequest,
    *,
    group: object | None = None,
    reply_id: Any = None,
    json_only: bool = False,
) -> Encoded:
    """Check, run and encode one request.

    ``group``: items of one /api/v1/batch call (they may stack). ``reply_id``: the id to echo
    when it is not the V2 string id (WebSocket ids may be integers). ``json_only``: the
    transport cannot carry binary outputs (batch items), so asking for them is a 400.
    """
    if json_only and _wants_binary(ir):
        raise bad_request(
            "binary outputs cannot be returned inside a JSON batch; use /v2/models/{model}/infer "
            "or /api/v1/infer for binary_data outputs"
        )
    m = await app.repo.get(ir.model or "", ir.version)
    feeds = m.check_feeds(ir.inputs)
    wanted = m.resolve_outputs(ir.outputs)
    names = [w.name for w in wanted]
    if ir.timeout_us:
        try:
            async with asyncio.timeout(ir.timeout_us / 1e6):
                arrays = await m.infer(feeds, names, group)
        except TimeoutError:
            raise HTTPError(
                504,
                f"request timed out after its parameters.timeout of {ir.timeout_us} us; "
                "its work was cancelled",
            ) from None
    else:
        arrays = await m.infer(feeds, names, group)
    tensors, chunks, nonfinite = codecs.encode_outputs(list(zip(wanted, arrays)), ir.binary_output)
    head: dict[str, Any] = {"model_name": m.name, "model_version": str(m.version)}
    rid = reply_id if reply_id is not None else ir.id
    if rid is not None:
        head["id"] = rid
    head["outputs"] = tensors
    return Encoded(head, chunks, nonfinite)


def _wants_binary(ir: InferRequest) -> bool:
    if ir.binary_output and not ir.outputs:
        return True
    return any(o.binary or (o.binary is None and ir.binary_output) for o in (ir.outputs or []))
