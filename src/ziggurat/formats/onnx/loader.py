"""``load_model``: an ONNX file (or bytes) -> ``ziggurat.ir.Model``, without the onnx package.

Why Ziggurat reads protobuf itself: ``import onnx`` costs ~0.15-0.3 s of cold start, and
``onnx.load`` builds protobuf objects that own a copy of every weight, which numpy copies again.
Here the file is memory-mapped, a small pure-Python wire reader (``wire.py``) walks it recording only
byte offsets, and each large initializer whose bytes sit aligned for its dtype becomes a read-only
numpy view on the map. Protobuf places ``raw_data`` at arbitrary offsets, so most tensors of a
single-file model are misaligned (on a BERT-base-like 438 MB file: 19 tensors / 179 MB viewed, 180 /
259 MB copied); those are copied with ``pread`` straight from the page cache into fresh aligned
arrays on two background threads while parsing continues. Reading the whole file into one aligned
buffer would not help: the misalignment is relative to the file, and it would copy 100% instead
of 60%. Small tensors (< 1 MiB) are copied even when aligned, because the kernel maps page-cache
folios of up to 2 MiB per fault and a tiny view would pin one in RSS.

Measured on the 2-core dev VM, BERT-base-like file (438 MB, 199 initializers), one fresh process per
run. The VM is shared, so two columns: best of 5 runs at a quiet moment, and the median of 7 runs
while busy (load average ~6):

=================================  ===============  ===========  =================================
                                   quiet (best)     busy (med.)  RSS after load
=================================  ===============  ===========  =================================
ziggurat ``load_model``            0.06 s (usually  0.36 s       278 MB; 455-476 MB once every
                                   0.17-0.28 s)                  weight has been read
``onnx.load`` + ``to_array``       0.90 s           3.6 s        874 MB
``onnxruntime.InferenceSession``   1.02 s           3.6 s        486 MB (peak 563 MB)
=================================  ===============  ===========  =================================

Attribute values become Python values: INT->int, FLOAT->float, STRING->str (bytes if not UTF-8),
TENSOR->ndarray, GRAPH->ir.Graph, SPARSE_TENSOR->ir.SparseTensor, TYPE_PROTO->ir.Type, and the
plural kinds -> lists. Model-local functions are inlined (``functions.py``).
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import stat
import struct
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ...errors import ExternalDataError, ModelLoadError, ModelNotFoundError
from ...ir import Model
from .messages import read_model
from .wire import WireError

log = logging.getLogger("ziggurat.formats.onnx")

# Copies smaller than this are done inline; larger ones on background threads.
_ASYNC_COPY_MIN = 1 << 20
# Aligned tensors at least this big are viewed in place (from files); smaller ones are copied.
_VIEW_MIN_BYTES = 1 << 20
# While walking a file, drop its mapped pages after each this many bytes of tensor data.
_DROP_EVERY = 64 << 20
_COPY_THREADS = 2  # the copies are page-fault bound; 2 threads suffice on small machines


def _drop_pages(mm: mmap.mmap) -> None:
    """Unmap the pages of a read-only file map from this process (they stay in the page cache).

    Parsing touches the pages that hold message headers, and the kernel maps whole page-cache
    folios (up to 2 MiB on ext4/xfs) on each fault, so walking a big file pulls about half of it
    into RSS. Dropping the mappings (during and after loading) undoes that; views re-fault exactly
    what they use. Safe because the map is shared and read-only: a re-fault reads the same bytes.
    """
    if hasattr(mmap, "MADV_DONTNEED"):
        try:
            mm.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):  # only an RSS optimization; never fail a load over it
            pass


def _fill(dst: np.ndarray, src: Any, fd: int | None, offset: int, nbytes: int) -> None:
    """Copy ``nbytes`` at ``offset`` of ``src`` into the uint8 array ``dst`` (a worker thread)."""
    if fd is None:
        dst[:] = np.frombuffer(src, np.uint8, nbytes, offset)
        return
    view = memoryview(dst)
    done = 0
    while done < nbytes:  # pread may return short counts (e.g. 2 GiB per call on Linux)
        n = os.preadv(fd, [view[done:]], offset + done)
        if n <= 0:
            raise OSError(f"unexpected end of file reading {nbytes} bytes at offset {offset}")
        done += n


class Context:
    """State shared while decoding one model: the buffer, external files, statistics."""

    def __init__(self, buf: Any, path: str | None, max_size: int | None):
        self.buf = buf
        self.path = path
        self.base_dir = os.path.dirname(os.path.abspath(path)) if path else None
        self.max_size = max_size
        self.external_bytes = 0
        self.dense_bytes = 0  # sparse initializers, once densified
        # Tensors smaller than this are copied even when aligned (bytes sources: always viewed).
        self.view_min_bytes = _VIEW_MIN_BYTES if path else 0
        self.view_unaligned = False  # load_model(view_unaligned=True): no alignment copies
        self._maps: dict[str, mmap.mmap] = {}
        self._fds: dict[int, int] = {}  # id(mmap) -> open descriptor of its file, during loading
        self._all_maps: list[mmap.mmap] = []
        self._passed = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []
        self.overloads: dict[int, Any] = {}  # id(node) -> (node, overload) when set
        self.in_function = False  # reading a FunctionProto body (ref_attr_name allowed)
        self.provided: dict[str, Any] = {}  # external tensors' data given by the caller, by name
        self.initializer_inputs: list[Any] = []  # main-graph inputs with an initializer
        self.memory_files: dict[str, Any] = {}  # external file name -> its bytes, given in memory
        # How many raw tensors were viewed in place vs copied (misaligned); see BENCHMARKS.md.
        self.viewed = self.copied = self.viewed_bytes = self.copied_bytes = 0

    def map_file(self, path: str) -> mmap.mmap | None:
        """Map ``path`` read-only (None if empty); its descriptor stays open until ``close``."""
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            if os.fstat(fd).st_size == 0:
                os.close(fd)
                return None
            mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except BaseException:
            os.close(fd)
            raise
        self._fds[id(mm)] = fd
        self._all_maps.append(mm)
        return mm

    def aligned_copy(self, src: Any, offset: int, nbytes: int, dt: Any, count: int) -> np.ndarray:
        """An aligned, read-only copy of ``count`` items of ``dt`` at ``src[offset:]``.

        Large copies run on a background thread (the copy is page-fault bound and releases the GIL,
        so it overlaps with parsing); ``finish_copies`` waits for them. From a file they use
        ``pread`` straight from the page cache, so the source pages never enter this process's RSS.
        """
        self.copied += 1
        self.copied_bytes += nbytes
        out = np.empty(count, dt)
        dst = out.view(np.uint8).reshape(-1)  # stays writable after ``out`` is made read-only
        out.flags.writeable = False
        fd = self._fds.get(id(src)) if hasattr(os, "preadv") else None
        if nbytes < _ASYNC_COPY_MIN or not _COPY_THREADS:
            dst[:] = np.frombuffer(src, np.uint8, nbytes, offset)
            return out
        if self._pool is None:
            self._pool = ThreadPoolExecutor(_COPY_THREADS, thread_name_prefix="ziggurat-load")
        self._pending.append(self._pool.submit(_fill, dst, src, fd, offset, nbytes))
        return out

    def finish_copies(self) -> None:
        """Wait for background copies; re-raise the first failure."""
        pending, self._pending = self._pending, []
        for fut in pending:
            fut.result()

    def close(self) -> None:
        """Finish copies and release loading resources (the maps stay alive while arrays use them)."""
        try:
            self.finish_copies()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
            for mm in self._all_maps:
                _drop_pages(mm)
            self._all_maps.clear()

    def passed(self, src: Any, nbytes: int) -> None:
        """Note that ``nbytes`` of tensor data in ``src`` were skipped over; see ``_drop_pages``."""
        if id(src) in self._fds:
            self._passed += nbytes
            if self._passed >= _DROP_EVERY:
                self._passed = 0
                _drop_pages(src)

    def external(self, label: str, entries: dict[str, str]) -> tuple[Any, int, int]:
        """Resolve a tensor's external_data entries to (buffer, offset, length)."""
        location = entries.get("location", "")
        if self.base_dir is None and location not in self.memory_files:
            raise ExternalDataError(
                f"{label} keeps its data in external file '{location}', but the model was given as"
                " bytes; load it from its path so the external file can be found next to it"
            )
        if not location:
            raise ExternalDataError(f"{label} is marked EXTERNAL but has no 'location' entry")
        try:
            offset = int(entries.get("offset", "0") or 0)
            length = int(entries["length"]) if entries.get("length") else None
        except ValueError:
            raise ExternalDataError(
                f"{label}: external data offset/length are not integers: {entries}"
            ) from None
        if offset < 0 or (length is not None and length < 0):
            raise ExternalDataError(f"{label}: negative external data offset/length: {entries}")
        mm = self.memory_files.get(location)  # the file's contents given by the caller
        if mm is None:
            full = self._resolve(label, location)
            mm = self._maps.get(full)
            if mm is None:
                mm = self._maps[full] = self._map_file(label, full)
        size = len(mm) if mm is not None else 0
        if length is None:
            length = size - offset
        if offset + length > size:
            raise ExternalDataError(
                f"{label}: external file '{location}' is {size} bytes, too short for offset"
                f" {offset} + length {length}; the file is truncated or belongs to another model"
            )
        self.external_bytes += length
        self._check_size(self.external_bytes, "its external data")
        return (mm if mm is not None else b""), offset, length

    def _resolve(self, label: str, location: str) -> str:
        base = os.path.realpath(self.base_dir)
        if os.path.isabs(location):
            raise ExternalDataError(
                f"{label}: external data location '{location}' is an absolute path; ONNX requires"
                f" a path relative to the model's folder ({base})"
            )
        full = os.path.realpath(os.path.join(base, location))
        if os.path.commonpath([base, full]) != base:
            raise ExternalDataError(
                f"{label}: external data location '{location}' resolves to '{full}', outside the"
                f" model's folder {base}; refusing to read it (move the data next to the model)"
            )
        return full

    def _map_file(self, label: str, full: str) -> mmap.mmap | None:
        try:
            return self.map_file(full)
        except FileNotFoundError:
            raise ExternalDataError(
                f"{label}: external data file '{full}' does not exist; copy it next to the model"
            ) from None
        except OSError as e:
            raise ExternalDataError(
                f"{label}: cannot read external data file '{full}': {e}"
            ) from None

    def densifying(self, label: str, dims: tuple[int, ...], itemsize: int) -> None:
        """Count a sparse tensor about to be densified against the size limit, before allocating
        it: a few bytes of sparse tensor can describe 2^62 dense elements."""
        nbytes = math.prod(dims) * itemsize
        self.dense_bytes += nbytes
        what = f"{label} densified ({dims}, {nbytes:,} bytes), with the file and external data,"
        self._check_size(len(self.buf) + self.external_bytes + self.dense_bytes, what)

    def _check_size(self, size: int, what: str) -> None:
        if self.max_size is not None and size > self.max_size:
            where = self.path or "the model"
            raise ModelLoadError(
                f"{where}: {what} is {size:,} bytes, over the limit of {self.max_size:,} bytes"
                " (max_size_bytes / max_model_size_mb); raise the limit to load it"
            )


def load_model(
    source: str | os.PathLike | bytes | bytearray | memoryview,
    *,
    max_size_bytes: int | None = None,
    external_initializers: dict[str, Any] | None = None,
    external_files: dict[str, Any] | None = None,
    view_unaligned: bool = False,
) -> Model:
    """Read an ONNX model from a file path or from its serialized bytes.

    Initializers are read-only numpy arrays; from a file they are views on a read-only memory map of
    it, which stays open as long as any array refers to it. External data is read relative to the
    model's folder and must stay inside it. ``max_size_bytes`` bounds the file (checked before
    reading) plus its external data. Raises ``ModelLoadError`` (``ExternalDataError`` for external
    data problems) with the path and the cause for anything that is not a loadable ONNX model.
    From bytes/bytearray/memoryview, large tensors view the caller's buffer: do not modify it while
    the model is in use. ``external_initializers`` (name -> array) supplies the data of tensors
    stored externally: their file references are not followed. ``external_files`` (file name as
    the model names it -> bytes) supplies external files' contents from memory.
    ``view_unaligned``: view misaligned tensors of a file in place too (numpy handles them, more
    slowly) instead of copying them; for callers that convert the weights at once and free the
    originals (``enable_quantization``), so the float copies never all sit in memory together.
    """
    provided = dict(external_initializers or {})
    files = {k: memoryview(v).cast("B") for k, v in (external_files or {}).items()}
    if isinstance(source, (bytes, bytearray, memoryview)):
        buf: Any = source
        if isinstance(source, memoryview):
            if not source.c_contiguous:
                buf = source.tobytes()
            elif source.format != "B" or source.ndim != 1:
                buf = source.cast("B")
        ctx = Context(buf, None, max_size_bytes)
        ctx.provided, ctx.memory_files = provided, files
        where = "<model bytes>"
        if len(buf) == 0:
            raise ModelLoadError("model bytes are empty; expected a serialized ONNX ModelProto")
        ctx._check_size(len(buf), "the model")
        return _decode(ctx, where)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"load_model expects a path, bytes, bytearray or memoryview, not {type(source).__name__}"
        )
    path = os.fsdecode(os.fspath(source))
    ctx = Context(b"", path, max_size_bytes)
    ctx.provided, ctx.memory_files = provided, files
    ctx.view_unaligned = view_unaligned
    ctx.buf = _map_model(path, ctx)
    model = _decode(ctx, path)
    model.path = path
    return model


def _map_model(path: str, ctx: Context) -> Any:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ModelNotFoundError(f"model file not found: {path}") from None
    except OSError as e:
        raise ModelLoadError(f"cannot access model file {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ModelLoadError(f"{path} is a directory; pass the path of the .onnx file inside it")
    if not stat.S_ISREG(st.st_mode):
        raise ModelLoadError(f"{path} is not a regular file")
    if st.st_size == 0:
        raise ModelLoadError(f"{path} is empty (0 bytes); expected an ONNX model")
    ctx._check_size(st.st_size, "the file")
    try:
        return ctx.map_file(path)
    except OSError as e:
        raise ModelLoadError(f"cannot read model file {path}: {e.strerror or e}") from None


def _decode(ctx: Context, where: str) -> Model:
    try:
        try:
            model = read_model(ctx)
        finally:
            ctx.close()
        log.debug(
            "%s: %d tensors viewed in place (%d bytes), %d copied for alignment (%d bytes)",
            where, ctx.viewed, ctx.viewed_bytes, ctx.copied, ctx.copied_bytes,
        )  # fmt: skip
        return model
    except ExternalDataError as e:
        raise ExternalDataError(f"{where}: {e}") from None
    except ModelLoadError as e:
        raise ModelLoadError(f"{where}: {e}") from None
    except (
        WireError,
        ValueError,
        IndexError,
        struct.error,
        UnicodeDecodeError,
        OverflowError,
    ) as e:
        raise ModelLoadError(
            f"{where} is not a valid ONNX model ({type(e).__name__}: {e}); the file is truncated,"
            " corrupt, or not ONNX (re-export or re-download it)"
        ) from None
    except RecursionError:
        raise ModelLoadError(
            f"{where}: messages are nested too deeply to be an ONNX model"
        ) from None
    except MemoryError:
        raise ModelLoadError(f"{where}: not enough memory to load the model") from None
    except OSError as e:
        raise ModelLoadError(f"{where}: reading failed: {e}") from None
