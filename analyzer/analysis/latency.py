"""Latency of answers: what the proxy observed, what the page reported, and the two joined.

Definitions (``docs/metrics.md`` has them in full):

* a *text event* is a ``stream_events`` row with non-null, non-empty ``text``;
* ``ttft_ms`` / ``e2e_ms`` are the columns the extractor stored on ``conversation_turns`` /
  ``api_calls`` (offset of the first text event / of the last event from ``flows.started_at``);
* ``itl_ms`` pools every gap between consecutive text events of one flow (ordered by ``seq``);
* ``tpot_ms`` = (offset of the last text event − offset of the first) / (tokens − 1) per answer,
  tokens from the matched beacon's ``count_tokens`` (web) or ``completion_tokens`` (API) when
  there is one, else the number of text events.

Everything is vectorised: the one pass over ``stream_events`` (which can hold tens of millions of
rows) works on Arrow columns and NumPy arrays; the flow id strings are dictionary-encoded once and
never turned into Python objects.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from analyzer.analysis.handoff import merge_handoffs
from analyzer.analysis.resume import mark_controls, merge_resumes, resume_pairs
from analyzer.schema import TABLES
from analyzer.store import Capture, CaptureError

log = logging.getLogger(__name__)

STATS_KEYS = ("n", "mean", "min", "p50", "p90", "p95", "p99", "max")
_PERCENTILES = (50, 90, 95, 99)
UNKNOWN_MODEL = "unknown"

# The columns each table is read with: the report never reads anything else (the benchmark's memory
# budget is measured against the size of exactly these columns).
COLUMNS: dict[str, list[str]] = {
    "stream_events": ["flow_id", "seq", "offset_ms", "text"],
    "conversation_turns": [
        "flow_id", "action", "conversation_id", "model_slug", "server_model_slug", "requested_model",
        "started_at", "ttft_ms", "e2e_ms", "cf_ray", "stream_format", "user_message_id",
        # what joins a resumed answer's flows into one turn (analyzer.analysis.resume)
        "path", "n_events", "n_text_events", "resume_offset", "next_offset", "status", "error", "error_code",
    ],
    "stream_controls": ["flow_id", "kind", "conversation_id", "at", "status"],
    "perf_stats": ["flow_id", "metric", "value"],
    "latency_beacons": [
        "server_request_id", "model", "count_tokens", "ts_first_token_ms",
        "ts_total_request_ms", "ts_median_token_without_first_ms", "ts_p95_token_without_first_ms",
        "ts_p99_token_without_first_ms",
    ],
    "api_calls": [
        "flow_id", "model", "started_at", "ttft_ms", "e2e_ms", "prompt_tokens", "completion_tokens",
        "total_tokens",
    ],
}

OBSERVED_METRICS = ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms")
BEACON_METRICS = (
    "ts_first_token_ms", "ts_total_request_ms", "count_tokens", "tokens_per_s",
    "ts_median_token_without_first_ms", "ts_p95_token_without_first_ms", "ts_p99_token_without_first_ms",
)


def stats(values: Any) -> dict[str, int | float | None]:
    """``{n, mean, min, p50, p90, p95, p99, max}`` of the finite values; nulls when there are none.

    Percentiles interpolate linearly between closest ranks (NumPy's default method).
    """
    if isinstance(values, pd.Series | pd.Index):
        arr = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    else:
        arr = np.asarray(values, dtype="float64")
    finite = np.isfinite(arr)
    if not finite.all():
        arr = arr[finite]
    if arr.size == 0:
        return {"n": 0} | {k: None for k in STATS_KEYS[1:]}
    p50, p90, p95, p99 = np.percentile(arr, _PERCENTILES)
    return {
        "n": int(arr.size), "mean": float(arr.mean()), "min": float(arr.min()),
        "p50": float(p50), "p90": float(p90), "p95": float(p95), "p99": float(p99), "max": float(arr.max()),
    }


def _dedupe(capture: Capture, frame: pd.DataFrame, key: str | list[str]) -> pd.DataFrame:
    """Drop rows repeated across combined captures (a live capture and its ``-w`` import share flow ids)."""
    if len(capture.paths) > 1 and len(frame):
        return frame.drop_duplicates(subset=key, keep="first", ignore_index=True)
    return frame


def model_column(frame: pd.DataFrame, *candidates: str) -> pd.Series:
    """The first non-empty of ``candidates`` per row, else ``unknown``: the model a row is filed under."""
    out = pd.Series(np.nan, index=frame.index, dtype="str")
    for name in candidates:
        col = frame[name].astype("str")
        out = out.fillna(col.mask(col == ""))
    return out.fillna(UNKNOWN_MODEL).astype("str")


def isin(values: pd.Series, pool: pd.Series) -> np.ndarray:
    """``values.isin(pool)`` for string columns, in Arrow (pandas' version walks Arrow strings in Python)."""
    value_set = pa.array(pool.dropna().unique(), type=pa.string())
    found = pc.is_in(pa.array(values, type=pa.string()), value_set=value_set)
    return found.to_numpy(zero_copy_only=False).astype(bool)


# --------------------------------------------------------------------------------------------
# The one pass over stream_events
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextEvents:
    """Per-flow summary of the text events plus the pooled inter-token gaps, keyed by dictionary code.

    ``flow_ids`` is the dictionary (every flow id in ``stream_events``); ``per_flow`` is indexed by
    flow id with ``first_text_ms``, ``last_text_ms``, ``n_text_events`` (flows with at least one
    timed text event); ``timed_flows`` counts events with a non-null offset per dictionary code;
    ``gap_codes``/``gaps`` hold one entry per gap.
    """

    flow_ids: pd.Index
    per_flow: pd.DataFrame
    timed_events: np.ndarray
    gap_codes: np.ndarray
    gaps: np.ndarray


def _stream_event_batches(capture: Capture) -> Iterator[pa.RecordBatch]:
    """The ``stream_events`` columns the report needs, batch by batch, ``flow_id`` dictionary-encoded.

    Parquet already stores flow ids as a dictionary; reading them that way skips materialising tens
    of millions of 36-character strings (the largest cost in time and memory of the whole report),
    and streaming batches means the whole table is never in memory at once. ``Capture.arrow`` has
    neither option, so this reads the same part files with the same schema.
    """
    columns = COLUMNS["stream_events"]
    files = capture.part_files("stream_events")  # checked, superseded parts skipped: as Capture.arrow reads
    if not files:
        return
    schema = TABLES["stream_events"]
    schema = schema.set(schema.get_field_index("flow_id"), pa.field("flow_id", pa.dictionary(pa.int32(), pa.string())))
    fmt = pads.ParquetFileFormat(read_options=pads.ParquetReadOptions(dictionary_columns={"flow_id"}))
    try:
        # One file at a time with a short batch read-ahead: peak memory stays a few row groups.
        yield from pads.dataset(files, schema=schema, format=fmt).to_batches(
            columns=columns, fragment_readahead=1, batch_readahead=4)
    except (pa.ArrowInvalid, OSError) as exc:
        raise CaptureError(f"{capture.paths[0]}: table stream_events cannot be read: {exc}") from exc


def text_events(capture: Capture) -> TextEvents:
    """Read ``stream_events`` once and reduce it to per-flow text timing and ITL gaps (vectorised)."""
    dictionaries: list[pa.Array] = []
    timed_counts: list[np.ndarray] = []
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    n_dict = 0
    # Batch by batch: only the text events (not every event) are ever held, as NumPy arrays. Codes
    # index the concatenation of the batches' own dictionaries until they are unified below.
    for batch in _stream_event_batches(capture):
        flow_col = batch.column("flow_id")
        codes = pc.fill_null(flow_col.indices, -1).to_numpy().astype("int32", copy=False)
        offset_col = batch.column("offset_ms")
        is_timed = pc.is_valid(offset_col).to_numpy(zero_copy_only=False) & (codes >= 0)
        timed_counts.append(np.bincount(codes[is_timed], minlength=len(flow_col.dictionary)))
        # Text events: non-null, non-empty text with a known offset (HAR imports have null offsets).
        is_text = pc.fill_null(pc.greater(pc.binary_length(batch.column("text")), 0), False)
        keep = is_text.to_numpy(zero_copy_only=False) & is_timed
        parts.append((codes[keep] + n_dict,
                      pc.fill_null(batch.column("seq"), -1).to_numpy()[keep].astype("int32"),
                      pc.fill_null(offset_col, np.nan).to_numpy()[keep]))
        dictionaries.append(flow_col.dictionary)
        n_dict += len(flow_col.dictionary)
    # One code per distinct flow id, in order of first appearance (so grouped rows stay sorted).
    if dictionaries:
        unified = pc.dictionary_encode(pa.concat_arrays(dictionaries))
        remap = unified.indices.to_numpy().astype("int32")
        flow_ids = pd.Index(unified.dictionary.to_pandas(), dtype="str", name="flow_id")
        timed_events = np.bincount(remap, weights=np.concatenate(timed_counts), minlength=len(flow_ids))
        timed_events = timed_events.astype("int64")
    else:
        remap = np.empty(0, dtype="int32")
        flow_ids = pd.Index([], dtype="str", name="flow_id")
        timed_events = np.empty(0, dtype="int64")
    del dictionaries, timed_counts
    codes = remap[np.concatenate([p[0] for p in parts])] if parts else np.empty(0, dtype="int32")
    seq = np.concatenate([p[1] for p in parts]) if parts else np.empty(0, dtype="int32")
    offsets = np.concatenate([p[2] for p in parts]) if parts else np.empty(0, dtype="float64")
    del parts
    # Order by (flow, seq). Parts written by the extractor are already grouped by flow in seq
    # order (dictionary codes follow first appearance), so the sort is usually skipped.
    if len(codes) > 1:
        same_flow = codes[1:] == codes[:-1]
        if (codes[1:] < codes[:-1]).any() or (same_flow & (seq[1:] < seq[:-1])).any():
            order = np.lexsort((seq, codes))
            codes, seq, offsets = codes[order], seq[order], offsets[order]
            del order
            same_flow = codes[1:] == codes[:-1]
        # The same (flow, seq) twice means a combined capture repeats a flow: count it once.
        dup = same_flow & (seq[1:] == seq[:-1])
        if dup.any():
            keep = np.r_[True, ~dup]
            codes, offsets = codes[keep], offsets[keep]
        del same_flow, dup
    del seq
    same = codes[1:] == codes[:-1]
    gaps = np.diff(offsets)[same]
    gap_codes = codes[1:][same]
    starts = np.flatnonzero(np.r_[True, ~same]) if len(codes) else np.empty(0, dtype="int64")
    ends = np.r_[starts[1:], len(codes)] - 1 if len(codes) else starts
    per_flow = pd.DataFrame(
        {
            "first_text_ms": offsets[starts],
            "last_text_ms": offsets[ends],
            "n_text_events": (ends - starts + 1).astype("int64"),
        },
        index=flow_ids[codes[starts]] if len(codes) else pd.Index([], dtype="str", name="flow_id"),
    )
    return TextEvents(flow_ids, per_flow, timed_events, gap_codes, gaps)


# --------------------------------------------------------------------------------------------
# Per-answer frames
# --------------------------------------------------------------------------------------------


def _beacons(capture: Capture) -> pd.DataFrame:
    if len(capture.paths) > 1:  # the beacon's own flow id is only needed to drop repeated flows
        beacons = capture.table("latency_beacons", ["flow_id", *COLUMNS["latency_beacons"]])
        return _dedupe(capture, beacons, "flow_id").drop(columns="flow_id")
    return capture.table("latency_beacons", COLUMNS["latency_beacons"])


def _take(values: np.ndarray, pos: np.ndarray, fill: float) -> np.ndarray:
    """``values[pos]`` with ``fill`` where ``pos`` is -1 (not found); safe when ``values`` is empty."""
    out = np.full(len(pos), fill, dtype="float64")
    hit = pos >= 0
    out[hit] = values[pos[hit]]
    return out


def _answers(
    rows: pd.DataFrame, events: TextEvents, reported_tokens: pd.Series, reported_source: str
) -> pd.DataFrame:
    """Attach text-event timing, token counts and TPOT to one row per answer (turn or API call)."""
    pos = events.per_flow.index.get_indexer(rows["flow_id"])
    per_flow = events.per_flow
    first = _take(per_flow["first_text_ms"].to_numpy(), pos, np.nan)
    last = _take(per_flow["last_text_ms"].to_numpy(), pos, np.nan)
    n_text = _take(per_flow["n_text_events"].to_numpy(), pos, 0).astype("int64")
    n_timed = _take(events.timed_events, events.flow_ids.get_indexer(rows["flow_id"]), 0)
    has_timing = (n_timed > 0) | rows["ttft_ms"].notna().to_numpy() | rows["e2e_ms"].notna().to_numpy()

    reported = pd.to_numeric(reported_tokens, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    use_reported = np.isfinite(reported) & (reported > 0)
    tokens = np.where(use_reported, reported, n_text.astype("float64"))
    source = np.where(use_reported, reported_source, "text_events")
    # TPOT needs a time span (two text events) and at least two tokens to spread it over.
    ok = has_timing & (n_text >= 2) & (tokens > 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(ok, (last - first) / (tokens - 1), np.nan)
    out = rows.copy()
    out["has_timing"] = has_timing
    out["n_text_events"] = n_text
    out["tokens"] = tokens
    out["token_source"] = pd.Series(source, index=rows.index, dtype="str")
    out["tpot_ms"] = tpot
    for name in ("ttft_ms", "e2e_ms"):
        out[name] = out[name].where(out["has_timing"])
    return out


def _handed_off_turns(capture: Capture, all_columns: bool = False) -> pd.DataFrame:
    columns = None if all_columns else COLUMNS["conversation_turns"]
    turns = _dedupe(capture, capture.table("conversation_turns", columns), "flow_id")
    return merge_handoffs(turns)


def conversation_turns(capture: Capture, *, all_columns: bool = False) -> pd.DataFrame:
    """``conversation_turns`` as the report reads it: one row per flow (combined captures may
    hold the same flow twice), each WebSocket hand-off folded into the answer it started, each
    resume into the answer it continued, stops and stream-status reads on the turn. The report's
    columns only, unless ``all_columns`` (texts included: what a notebook wants)."""
    turns = merge_resumes(_handed_off_turns(capture, all_columns))
    controls = _dedupe(capture, capture.table("stream_controls", COLUMNS["stream_controls"]), "flow_id")
    return mark_controls(turns, controls)


def fold_resumed(events: TextEvents, pairs: pd.DataFrame) -> TextEvents:
    """``events`` with each resume flow's text events counted as its turn's (offsets shifted to the
    first POST's start, ITL gaps filed under the turn's flow); the break itself is not an ITL gap
    (it is ``resume_gap_ms``)."""
    if pairs.empty or events.per_flow.empty:
        return events
    alias = pd.Series(pairs["into_flow_id"].to_numpy(), index=pairs["flow_id"].to_numpy())
    shift = pd.Series(pairs["shift_ms"].to_numpy(dtype="float64"), index=pairs["flow_id"].to_numpy())
    per = events.per_flow
    moved = per.index.isin(alias.index)
    if not moved.any():
        return events
    part = per[moved]
    s = shift.reindex(part.index).to_numpy()
    part = pd.DataFrame({"first_text_ms": part["first_text_ms"].to_numpy() + s,
                         "last_text_ms": part["last_text_ms"].to_numpy() + s,
                         "n_text_events": part["n_text_events"].to_numpy()},
                        index=pd.Index(alias.reindex(part.index).to_numpy(), dtype="str", name="flow_id"))
    touched = per.index.isin(part.index)
    both = pd.concat([per[touched], part])
    folded = both.groupby(level=0, sort=False).agg(
        first_text_ms=("first_text_ms", "min"), last_text_ms=("last_text_ms", "max"),
        n_text_events=("n_text_events", "sum"))
    folded.index.name = "flow_id"
    per_flow = pd.concat([per[~moved & ~touched], folded])
    # Dictionary codes of resume flows -> their turn's code (when the turn's flow has events).
    remap = np.arange(len(events.flow_ids))
    src = events.flow_ids.get_indexer(alias.index)
    dst = events.flow_ids.get_indexer(alias.to_numpy())
    ok = (src >= 0) & (dst >= 0)
    remap[src[ok]] = dst[ok]
    timed = np.bincount(remap, weights=events.timed_events, minlength=len(events.flow_ids)).astype("int64")
    gap_codes = remap[events.gap_codes] if len(events.gap_codes) else events.gap_codes
    return TextEvents(events.flow_ids, per_flow, timed, gap_codes.astype(events.gap_codes.dtype), events.gaps)


def turn_text_events(capture: Capture) -> TextEvents:
    """:func:`text_events` with resumed answers folded into their turns (:func:`fold_resumed`)."""
    return fold_resumed(text_events(capture), resume_pairs(_handed_off_turns(capture)))


def _turns(capture: Capture) -> pd.DataFrame:
    turns = conversation_turns(capture)
    turns["model_slug"] = model_column(turns, "model_slug", "server_model_slug", "requested_model")
    return turns.drop(columns=["server_model_slug", "requested_model"])


def _first_beacon_per_request(beacons: pd.DataFrame) -> pd.DataFrame:
    b = beacons[["server_request_id", "count_tokens"]]
    b = b[b["server_request_id"].notna()]
    return b.drop_duplicates("server_request_id", keep="first").set_index("server_request_id")


def turn_latency(capture: Capture, events: TextEvents | None = None) -> pd.DataFrame:
    """One row per conversation turn with its observed timing (see the module docstring).

    Columns: flow_id, conversation_id, model_slug, started_at, ttft_ms, e2e_ms, tpot_ms,
    n_text_events, tokens, token_source (``beacon`` | ``text_events``), cf_ray, has_timing.
    ``ttft_ms``/``e2e_ms``/``tpot_ms`` are null for turns without per-event timing.
    """
    events = events if events is not None else turn_text_events(capture)
    turns = _turns(capture)
    beacons = _first_beacon_per_request(_beacons(capture))
    cf = turns["cf_ray"]
    pos = beacons.index.get_indexer(cf)
    counts = beacons["count_tokens"].to_numpy(dtype="float64", na_value=np.nan)
    reported = pd.Series(_take(counts, pos, np.nan), index=turns.index)
    out = _answers(turns, events, reported, "beacon")
    cols = ["flow_id", "conversation_id", "model_slug", "started_at", "ttft_ms", "e2e_ms", "tpot_ms",
            "n_text_events", "tokens", "token_source", "cf_ray", "has_timing"]
    return out[cols]


def itl_gaps(capture: Capture, events: TextEvents | None = None, *, api: bool = False) -> pd.DataFrame:
    """Every gap between consecutive text events of one answer: flow_id, model_slug, itl_ms.

    Only answers with per-event timing count. ``api=True`` gives the gaps of ``api_calls`` instead of
    conversation turns. ``flow_id`` and ``model_slug`` are categoricals (there may be tens of millions of gaps).
    """
    events = events if events is not None else turn_text_events(capture)
    if api:
        rows = _dedupe(capture, capture.table("api_calls", ["flow_id", "model"]), "flow_id")
        models = model_column(rows, "model")
    else:
        rows = _turns(capture)
        models = rows["model_slug"]
    # Dictionary code -> row of the answer table (-1: another kind of flow).
    lut = pd.Index(rows["flow_id"]).get_indexer(events.flow_ids) if len(events.flow_ids) else np.empty(0, "int64")
    row_of_gap = lut[events.gap_codes] if len(events.gap_codes) else np.empty(0, dtype="int64")
    keep = row_of_gap >= 0
    every = bool(keep.all())  # the usual case without API traffic: use views, not copies
    gap_codes = events.gap_codes if every else events.gap_codes[keep]
    model_cat = pd.Categorical(models)
    model_codes = model_cat.codes[row_of_gap if every else row_of_gap[keep]]
    del row_of_gap
    return pd.DataFrame(
        {
            "flow_id": pd.Categorical.from_codes(gap_codes, categories=events.flow_ids)
            if len(events.flow_ids) else pd.Categorical([]),
            "model_slug": pd.Categorical.from_codes(model_codes, categories=model_cat.categories),
            "itl_ms": events.gaps if every else events.gaps[keep],
        },
        copy=False,
    )


def beacon_matches(capture: Capture, turns: pd.DataFrame | None = None) -> pd.DataFrame:
    """Latency beacons joined to conversation turns on ``server_request_id`` = the turn's ``cf_ray``.

    One row per matched beacon: server_request_id, flow_id (the turn's), model (the beacon's), model_slug (the turn's), ts_first_token_ms, ttft_ms (observed), ttft_gap_ms
    (= ts_first_token_ms − ttft_ms: what the page adds on top of the network).
    """
    turns = turns if turns is not None else turn_latency(capture)
    beacons = _beacons(capture)
    keyed = turns[turns["cf_ray"].notna()].drop_duplicates("cf_ray", keep="first")
    index = pd.Index(keyed["cf_ray"])
    pos = index.get_indexer(beacons["server_request_id"])
    hit = pos >= 0
    matched = keyed.iloc[pos[hit]]
    b = beacons[hit]
    out = pd.DataFrame(
        {
            "server_request_id": b["server_request_id"].to_numpy(),
            "flow_id": matched["flow_id"].to_numpy(),
            "model": b["model"].to_numpy(),
            "model_slug": matched["model_slug"].to_numpy(),
            "ts_first_token_ms": b["ts_first_token_ms"].to_numpy(dtype="float64", na_value=np.nan),
            "ttft_ms": matched["ttft_ms"].to_numpy(dtype="float64", na_value=np.nan),
        }
    )
    out["ttft_gap_ms"] = out["ts_first_token_ms"] - out["ttft_ms"]
    return out


def api_latency(capture: Capture, events: TextEvents | None = None) -> pd.DataFrame:
    """One row per OpenAI-API call with its observed timing, like :func:`turn_latency`.

    Columns: flow_id, model, started_at, ttft_ms, e2e_ms, tpot_ms, n_text_events, tokens,
    token_source (``usage`` = the response's ``completion_tokens`` | ``text_events``),
    prompt_tokens, completion_tokens, total_tokens, has_timing.
    """
    events = events if events is not None else text_events(capture)
    calls = _dedupe(capture, capture.table("api_calls", COLUMNS["api_calls"]), "flow_id").copy()
    calls["model"] = model_column(calls, "model")
    out = _answers(calls, events, calls["completion_tokens"], "usage")
    cols = ["flow_id", "model", "started_at", "ttft_ms", "e2e_ms", "tpot_ms", "n_text_events", "tokens",
            "token_source", "prompt_tokens", "completion_tokens", "total_tokens", "has_timing"]
    return out[cols]


def beacon_frame(capture: Capture) -> pd.DataFrame:
    """The latency beacons with ``tokens_per_s`` = count_tokens / ((total − first) / 1000) added."""
    beacons = _beacons(capture).copy()
    beacons["model"] = model_column(beacons, "model")
    span_s = (beacons["ts_total_request_ms"] - beacons["ts_first_token_ms"]) / 1000.0
    beacons["tokens_per_s"] = (beacons["count_tokens"] / span_s).where(span_s > 0)
    return beacons


# --------------------------------------------------------------------------------------------
# Report blocks
# --------------------------------------------------------------------------------------------


def _token_sources(frame: pd.DataFrame) -> dict[str, int]:
    used = frame.loc[frame["tpot_ms"].notna(), "token_source"]
    return {str(k): int(v) for k, v in used.value_counts().sort_index().items()}


def observed_block(answers: pd.DataFrame, gaps: pd.DataFrame | dict | None, *, unit: str = "turns") -> dict:
    """``observed`` stats: ttft/itl/tpot/e2e over answers with per-event timing, and what was left out.

    ``gaps`` is the ITL frame, or its stats already computed (``None``: no gaps).
    """
    timed = answers[answers["has_timing"]]
    if isinstance(gaps, pd.DataFrame):
        itl = stats(gaps["itl_ms"].to_numpy())
    else:
        itl = gaps if gaps is not None else stats([])
    return {
        unit: int(len(answers)),
        f"{unit}_with_timing": int(len(timed)),
        f"{unit}_without_timing": int(len(answers) - len(timed)),
        "ttft_ms": stats(timed["ttft_ms"]),
        "itl_ms": itl,
        "tpot_ms": stats(timed["tpot_ms"]),
        "e2e_ms": stats(timed["e2e_ms"]),
        "tpot_token_source": _token_sources(timed),
    }


def client_reported_block(beacons: pd.DataFrame) -> dict:
    """Stats across beacons of the page's own numbers (each beacon already summarises one answer)."""
    return {"beacons": int(len(beacons))} | {m: stats(beacons[m]) for m in BEACON_METRICS}


def _group_values(values: np.ndarray, codes: np.ndarray, categories: Iterable[str]) -> Iterator[tuple[str, np.ndarray]]:
    """``(category, values of that category)``, one category at a time (one subset in memory at once)."""
    for i, name in enumerate(categories):
        yield str(name), values[codes == i]


def perf_stats_frame(capture: Capture) -> pd.DataFrame:
    """``perf_stats`` rows (flow_id, metric, value): the server's own numbers of each answer (guide 6d)."""
    perf = capture.table("perf_stats", COLUMNS["perf_stats"])
    return _dedupe(capture, perf, ["flow_id", "metric", "value"])


def perf_stats_block(perf: pd.DataFrame | None) -> dict:
    """``{answers, metrics: {metric: stats}}``: statistics across answers of each number the v1
    stream's ``perf_stats`` events carried, beside the beacon's ``client_reported`` numbers."""
    if perf is None or perf.empty:
        return {"answers": 0, "metrics": {}}
    metrics = {str(name): stats(group["value"]) for name, group in perf.groupby("metric", sort=True)}
    return {"answers": int(perf["flow_id"].nunique()), "metrics": metrics}


def latency_block(
    turns: pd.DataFrame, gaps: pd.DataFrame, beacons: pd.DataFrame, matches: pd.DataFrame,
    api: pd.DataFrame, api_gaps: pd.DataFrame, perf: pd.DataFrame | None = None,
) -> dict:
    """The report's ``latency`` object from the per-answer frames."""
    n_beacons_with_id = int(beacons["server_request_id"].notna().sum())
    matched_beacons = len(matches)
    models = sorted(set(turns["model_slug"]) | set(beacons["model"]))
    by_model: dict[str, dict] = {}
    gap_cats = gaps["model_slug"].cat
    gap_groups = _group_values(gaps["itl_ms"].to_numpy(), gap_cats.codes.to_numpy(), gap_cats.categories)
    itl_by_model = {name: stats(values) for name, values in gap_groups}
    turn_groups = dict(tuple(turns.groupby("model_slug", sort=True, observed=True)))
    beacon_cat = pd.Categorical(beacons["model"])
    beacon_metrics = beacons[list(BEACON_METRICS)]  # numbers only: the per-model subsets stay small
    empty_turns = turns.iloc[0:0]
    for model in models:
        by_model[model] = {
            "observed": observed_block(turn_groups.get(model, empty_turns), itl_by_model.get(model)),
            "client_reported": client_reported_block(
                beacon_metrics[beacon_cat.codes == beacon_cat.categories.get_loc(model)]
                if model in beacon_cat.categories else beacon_metrics.iloc[0:0]),
        }
    return {
        "observed": observed_block(turns, gaps),
        "client_reported": client_reported_block(beacons),
        "server_reported": perf_stats_block(perf),
        "matched": {
            "pairs": int(matched_beacons),
            "unmatched_beacons": int(len(beacons) - matched_beacons),
            "beacons_without_request_id": int(len(beacons) - n_beacons_with_id),
            "turns_with_beacon": int(matches["flow_id"].nunique()),
            "ttft_gap_ms": stats(matches["ttft_gap_ms"]),
        },
        "by_model": by_model,
        "api": api_block(api, api_gaps),
    }


def api_block(api: pd.DataFrame, api_gaps: pd.DataFrame) -> dict:
    """``observed`` stats for API calls plus token usage summed per model."""
    block = observed_block(api, api_gaps, unit="calls")
    usage = api.groupby("model", sort=True).agg(
        calls=("flow_id", "size"),
        prompt_tokens=("prompt_tokens", "sum"),
        completion_tokens=("completion_tokens", "sum"),
        total_tokens=("total_tokens", "sum"),
    )
    block["usage_by_model"] = {
        str(model): {k: int(v) for k, v in row.items()} for model, row in usage.iterrows()
    }
    return block


def compute_latency(capture: Capture) -> dict[str, pd.DataFrame]:
    """Every per-answer frame at once, sharing the one pass over ``stream_events``."""
    events = turn_text_events(capture)
    turns = turn_latency(capture, events)
    return {
        "turns": turns,
        "itl_gaps": itl_gaps(capture, events),
        "beacons": beacon_frame(capture),
        "matches": beacon_matches(capture, turns),
        "api": api_latency(capture, events),
        "api_itl_gaps": itl_gaps(capture, events, api=True),
        "perf_stats": perf_stats_frame(capture),
    }


def latency_report(capture: Capture) -> dict:
    """The report's ``latency`` object for ``capture``."""
    f = compute_latency(capture)
    return latency_block(f["turns"], f["itl_gaps"], f["beacons"], f["matches"], f["api"], f["api_itl_gaps"],
                         f["perf_stats"])


__all__: Iterable[str] = [
    "STATS_KEYS", "api_latency", "beacon_frame", "beacon_matches", "compute_latency", "itl_gaps",
    "latency_report", "stats", "text_events", "turn_latency",
]
