"""String ops: StringNormalizer, StringConcat, StringSplit, RegexFullMatch, TfIdfVectorizer.

String tensors are numpy object arrays of Python ``str``; the string ops are host-only. Bulk string
work goes through numpy's vectorized string functions (``np.strings``) on a ``StringDType`` view.
"""

from __future__ import annotations

import itertools
import re

import numpy as np

from ..errors import ExecutionError
from .registry import kernel

_SDT = np.dtypes.StringDType()


def _as_str(x):
    """A StringDType copy of an object (or bytes/str) array, for np.strings functions."""
    x = np.asarray(x)
    if x.dtype.kind == "S" or (x.dtype == object and x.size and isinstance(x.flat[0], bytes)):
        x = np.vectorize(
            lambda v: v.decode("utf-8") if isinstance(v, bytes) else v, otypes=[object]
        )(x)
    return x.astype(_SDT)


def _as_obj(x):
    return np.asarray(x).astype(object)


@kernel("StringNormalizer", since=10)
def StringNormalizer(
    x, /, *, case_change_action="NONE", is_case_sensitive=0, locale="", stopwords=None
):
    """Drop stop words from a [C] or [1, C] string tensor, then optionally change case."""
    if case_change_action not in ("NONE", "LOWER", "UPPER"):
        raise ExecutionError(
            f"StringNormalizer: unknown case_change_action {case_change_action!r}; "
            "expected NONE, LOWER or UPPER"
        )
    if x.ndim == 2 and x.shape[0] != 1 or x.ndim not in (1, 2):
        raise ExecutionError(
            f"StringNormalizer: input must have shape [C] or [1, C], got {tuple(x.shape)}"
        )
    s = _as_str(x.reshape(-1))
    if stopwords:
        stops = _as_str(np.array(list(stopwords), dtype=object))
        if is_case_sensitive:
            keep = ~np.isin(s, stops)
        else:
            keep = ~np.isin(np.strings.lower(s), np.strings.lower(stops))
        s = s[keep]
    if case_change_action == "LOWER":
        s = np.strings.lower(s)
    elif case_change_action == "UPPER":
        s = np.strings.upper(s)
    if s.size == 0:  # all dropped: a single empty string, as the spec requires
        s = np.array([""], dtype=_SDT)
    out = _as_obj(s)
    return (out.reshape(1, -1) if x.ndim == 2 else out,)


@kernel("StringConcat", since=20)
def StringConcat(x, y, /):
    """Elementwise (broadcasting) concatenation of two string tensors."""
    return (_as_obj(np.strings.add(_as_str(x), _as_str(y))),)


def _split_one(delimiter, maxsplit):
    sep = delimiter or None  # unset or "" splits on runs of whitespace
    limit = -1 if maxsplit is None else int(maxsplit)

    def split(v):
        return v.split(sep, limit)

    return split


@kernel("StringSplit", since=20)
def StringSplit(x, /, *, delimiter="", maxsplit=None):
    """Split each string; returns (substrings padded with "" to a common last dim, counts)."""
    flat = _as_obj(x).reshape(-1)
    parts = np.frompyfunc(_split_one(delimiter, maxsplit), 1, 1)(flat) if flat.size else flat
    counts = (
        np.frompyfunc(len, 1, 1)(parts).astype(np.int64) if flat.size else np.zeros(0, np.int64)
    )
    width = int(counts.max()) if counts.size else 0
    out = np.full((flat.size, width), "", dtype=object)
    if flat.size and width:
        rows = np.repeat(np.arange(flat.size), counts)
        cols = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
        out[rows, cols] = list(itertools.chain.from_iterable(parts))
    return out.reshape(*x.shape, width), counts.reshape(x.shape)


@kernel("RegexFullMatch", since=20)
def RegexFullMatch(x, /, *, pattern=""):
    """True where the whole string matches ``pattern`` (Python ``re`` stands in for RE2)."""
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise ExecutionError(f"RegexFullMatch: invalid pattern {pattern!r}: {exc}") from exc
    flat = _as_obj(x).reshape(-1)
    if flat.size == 0:
        return (np.zeros(x.shape, dtype=bool),)
    hit = np.frompyfunc(lambda v: rx.fullmatch(v) is not None, 1, 1)(flat)
    return (hit.astype(bool).reshape(x.shape),)


# ---------------------------------------------------------------------------------------------
# TfIdfVectorizer


def _token_ids(x, pool):
    """Map every token of ``x`` to its index in the sorted unique ``pool`` vocabulary, -1 if absent."""
    vocab = np.unique(pool)
    if x.size == 0 or vocab.size == 0:
        return np.full(x.shape, -1, dtype=np.int64), vocab
    pos = np.clip(np.searchsorted(vocab, x), 0, vocab.size - 1)
    return np.where(vocab[pos] == x, pos, -1).astype(np.int64), vocab


def _pool_ngrams(pool_ids, ngram_counts, max_n):
    """Split the flat pool into (first ngram number, (K, n) id array) per n-gram length n."""
    out = {}
    starts = list(ngram_counts) + [len(pool_ids)]
    first = 0
    for n in range(1, len(ngram_counts) + 1):
        chunk = pool_ids[starts[n - 1] : starts[n]]
        if chunk.size % n:
            raise ExecutionError(
                f"TfIdfVectorizer: the {n}-gram section of the pool has {chunk.size} items, "
                f"not a multiple of {n}; check ngram_counts {list(ngram_counts)}"
            )
        grams = chunk.reshape(-1, n)
        if n <= max_n:
            out[n] = (first, grams)
        first += grams.shape[0]
    return out, first


@kernel("TfIdfVectorizer", since=9)
def TfIdfVectorizer(
    x,
    /,
    *,
    max_gram_length=None,
    max_skip_count=None,
    min_gram_length=None,
    mode=None,
    ngram_counts=None,
    ngram_indexes=None,
    pool_int64s=None,
    pool_strings=None,
    weights=None,
):
    """Count (TF), indicate (IDF) or weight (TFIDF) pool n-grams, with skips, in each row of ``x``."""
    if mode not in ("TF", "IDF", "TFIDF"):
        raise ExecutionError(f"TfIdfVectorizer: mode must be TF, IDF or TFIDF, got {mode!r}")
    if (pool_int64s is None) == (pool_strings is None):
        raise ExecutionError("TfIdfVectorizer: set exactly one of pool_int64s and pool_strings")
    if x.ndim not in (1, 2):
        raise ExecutionError(
            f"TfIdfVectorizer: input must be 1-D or 2-D, got shape {tuple(x.shape)}"
        )
    min_n, max_n, max_skip = int(min_gram_length), int(max_gram_length), int(max_skip_count)
    rows = np.asarray(x).reshape(1, -1) if x.ndim == 1 else np.asarray(x)
    if pool_strings is not None:
        pool = _as_str(np.array(list(pool_strings), dtype=object))
        tokens = _as_str(rows) if rows.size else rows
    else:
        pool = np.asarray(pool_int64s, dtype=np.int64)
        tokens = rows.astype(np.int64)
    ids, vocab = _token_ids(tokens, pool)
    pool_ids, _ = _token_ids(pool, pool)
    grams_by_n, n_total = _pool_ngrams(pool_ids, list(ngram_counts), max_n)
    out_idx = np.asarray(ngram_indexes, dtype=np.int64)
    width = int(out_idx.max()) + 1 if out_idx.size else 0
    n_rows, seq = ids.shape
    counts = np.zeros((n_rows, n_total), dtype=np.float64)
    for n in range(min_n, max_n + 1):
        if n not in grams_by_n or grams_by_n[n][1].size == 0:
            continue
        first, grams = grams_by_n[n]
        # Unigrams are the same for every skip, so they are counted once.
        for skip in [0] if n == 1 else range(max_skip + 1):
            span = (n - 1) * (skip + 1) + 1
            if span > seq:
                break
            win = np.arange(seq - span + 1)[:, None] + np.arange(n)[None, :] * (skip + 1)
            cand = ids[:, win]  # (rows, positions, n)
            counts += _match_counts(cand, grams, first, n_total)
    w = np.ones(n_total) if weights is None else np.asarray(weights, dtype=np.float64)
    if mode == "IDF":
        counts = np.minimum(counts, 1) * w
    elif mode == "TFIDF":
        counts = counts * w
    y = np.zeros((n_rows, width), dtype=np.float32)
    np.add.at(y, (slice(None), out_idx[:n_total]), counts[:, : out_idx.size].astype(np.float32))
    return (y.reshape(-1) if x.ndim == 1 else y,)


def _match_counts(cand, grams, first, n_total):
    """(rows, n_total) occurrence counts of each pool n-gram among the candidate windows."""
    n_rows = cand.shape[0]
    n = grams.shape[1]
    flat = cand.reshape(-1, n)
    row_of = np.repeat(np.arange(n_rows), cand.shape[1])
    ok = (flat >= 0).all(axis=1)
    flat, row_of = flat[ok], row_of[ok]
    out = np.zeros((n_rows, n_total))
    if flat.size == 0:
        return out
    # Give every distinct n-gram one id, then look the windows' ids up among the pool's.
    both = np.concatenate([grams, flat])
    _, inv = np.unique(both, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    pool_of_id = np.full(inv.max() + 1, -1, dtype=np.int64)
    pool_of_id[inv[: grams.shape[0]]] = np.arange(grams.shape[0])
    hit = pool_of_id[inv[grams.shape[0] :]]
    sel = hit >= 0
    np.add.at(out, (row_of[sel], first + hit[sel]), 1)
    return out
