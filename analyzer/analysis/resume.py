"""Resumed answers joined back into one turn, and stops and stream-status reads put on the turn.

A v1 answer whose stream broke (no ``[DONE]``) is continued by ``POST …/f/conversation/resume``
``{conversation_id, offset}`` (guide 6c), possibly several times; a celsius ``stream_handoff`` may
be followed the same way (its ``resume_sse_endpoint`` option). Each flow is extracted on its own
(``conversation_turns`` row ``path`` = ``…/resume``, ``resume_offset`` = the offset it asked from);
here they become one row, as the WebSocket hand-offs do in ``analyzer.analysis.handoff``:

* a resume belongs to the latest non-resume turn of its conversation that started before it;
* the text is the first flow's answer continued by each resume's (a resume that names a message
  of its own, e.g. one it started, replaces it); status, finish, error, model and title are the
  last part's (model and title where it names them);
* TTFT and E2E count from the first POST; ``n_events`` / ``n_text_events`` are summed;
* ``n_resumes`` counts the resume requests, ``resume_gap_ms`` sums, over the resumes that streamed,
  the time from the last event of the part before to the first text event of the resume (its last
  event when it carries no text), ``resume_error`` lists the codes of resumes that failed
  (``tokenless_resume_unavailable``, ``persisted_final_available``…), ``resume_events_lost`` the
  events skipped (>0) or repeated (<0) between one part's ``next_offset`` and the next resume's offset.

``mark_controls`` then sets ``stopped_by_user`` (a ``stop_conversation`` for the conversation at or
after the turn's start, before its next turn) and ``stream_status`` (the last status read in that
window). Pure: DataFrames in, DataFrames out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RESUME_SUFFIX = "/conversation/resume"
PAIR_COLUMNS = ["flow_id", "into_flow_id", "part", "shift_ms", "streamed"]
RESUME_RESULT_COLUMNS = ("n_resumes", "resume_gap_ms", "resume_error", "resume_events_lost")


def is_resume_row(turns: pd.DataFrame) -> pd.Series:
    if "path" not in turns.columns:
        return pd.Series(False, index=turns.index)
    path = turns["path"].astype("str").str.rstrip("/")
    return path.str.endswith(RESUME_SUFFIX).fillna(False).astype(bool)


def _streamed(row: pd.Series) -> bool:
    events = row.get("n_events")
    return bool(pd.notna(events) and events > 0) and row.get("stream_format") not in ("json",)


def resume_pairs(turns: pd.DataFrame) -> pd.DataFrame:
    """One row per resume flow: ``flow_id`` (the resume's), ``into_flow_id`` (the turn it continues),
    ``part`` (1, 2, … in time order), ``shift_ms`` (its start after the first POST's), ``streamed``."""
    if turns.empty or not {"flow_id", "conversation_id", "started_at"} <= set(turns.columns):
        return pd.DataFrame(columns=PAIR_COLUMNS)
    resumes = is_resume_row(turns)
    if not resumes.any():
        return pd.DataFrame(columns=PAIR_COLUMNS)
    keep = turns["conversation_id"].notna() & turns["started_at"].notna()
    origins = turns[~resumes & keep].sort_values("started_at", kind="stable")
    tails = turns[resumes & keep].sort_values("started_at", kind="stable")
    joined = pd.merge_asof(
        tails[["flow_id", "conversation_id", "started_at"]].rename(columns={"started_at": "at"}),
        origins[["flow_id", "conversation_id", "started_at"]].rename(
            columns={"flow_id": "into_flow_id", "started_at": "into_started_at"}),
        left_on="at", right_on="into_started_at", by="conversation_id", direction="backward",
        allow_exact_matches=True)
    joined = joined.dropna(subset=["into_flow_id"])
    if joined.empty:
        return pd.DataFrame(columns=PAIR_COLUMNS)
    joined["part"] = joined.groupby("into_flow_id").cumcount() + 1
    joined["shift_ms"] = (joined["at"] - joined["into_started_at"]).dt.total_seconds() * 1000.0
    streamed = tails.set_index("flow_id").apply(_streamed, axis=1)
    joined["streamed"] = joined["flow_id"].map(streamed).fillna(False).astype(bool)
    return joined[PAIR_COLUMNS].reset_index(drop=True)


def _get(row: pd.Series, name: str):
    value = row.get(name)
    return None if value is None or (not isinstance(value, (list, tuple)) and pd.isna(value)) else value


def _fold(origin: pd.Series, parts: list[tuple[pd.Series, float]]) -> dict:
    """The columns of one resumed turn from its first flow and its resumes (with their shifts)."""
    out: dict = {}
    text = _get(origin, "assistant_text")
    message_id = _get(origin, "assistant_message_id")
    ttft = _get(origin, "ttft_ms")
    last_streamed: tuple[pd.Series, float] | None = (origin, 0.0) if _streamed(origin) else None
    n_events = _get(origin, "n_events") or 0
    n_text = _get(origin, "n_text_events") or 0
    gaps: list[float] = []
    lost: list[int] = []
    failures: list[str] = []
    last_failed: pd.Series | None = None
    for part, shift in parts:
        if not _streamed(part):
            failures.append(str(_get(part, "error_code") or _get(part, "error") or _get(part, "status") or "failed"))
            last_failed = part
            continue
        last_failed = None
        if last_streamed is not None:
            prev, prev_shift = last_streamed
            prev_end = prev_shift + (_get(prev, "e2e_ms") or 0.0)
            first = _get(part, "ttft_ms")
            first = first if first is not None else _get(part, "e2e_ms")
            if first is not None:
                gaps.append(shift + first - prev_end)
            if _get(prev, "next_offset") is not None and _get(part, "resume_offset") is not None:
                lost.append(int(part["resume_offset"]) - int(prev["next_offset"]))
        if ttft is None and _get(part, "ttft_ms") is not None:
            ttft = shift + part["ttft_ms"]
        if "assistant_text" in part.index:
            if _get(part, "assistant_message_id") is None:
                text = (text or "") + (_get(part, "assistant_text") or "")
            else:
                text, message_id = _get(part, "assistant_text"), part["assistant_message_id"]
        n_events += _get(part, "n_events") or 0
        n_text += _get(part, "n_text_events") or 0
        last_streamed = (part, shift)
    out["n_resumes"] = len(parts)
    out["resume_gap_ms"] = float(sum(gaps)) if gaps else np.nan
    out["resume_error"] = ",".join(failures) if failures else None
    out["resume_events_lost"] = int(sum(lost)) if lost else None
    if "assistant_text" in origin.index:
        out["assistant_text"] = text
    if "assistant_message_id" in origin.index:
        out["assistant_message_id"] = message_id
    if "ttft_ms" in origin.index:
        out["ttft_ms"] = ttft
    if "n_events" in origin.index:
        out["n_events"] = n_events
    if "n_text_events" in origin.index:
        out["n_text_events"] = n_text
    if last_streamed is not None and last_streamed[0] is not origin:
        last, shift = last_streamed
        if "e2e_ms" in origin.index and _get(last, "e2e_ms") is not None:
            out["e2e_ms"] = shift + last["e2e_ms"]
        for column in ("status", "finish_type", "error", "next_offset", "server_model_slug", "model_slug", "title"):
            if column in origin.index and (column in ("status", "error") or _get(last, column) is not None):
                out[column] = _get(last, column)
    if last_failed is not None and "error" in origin.index:
        out["error"] = _get(last_failed, "error") or out.get("error", _get(origin, "error"))
    return out


def merge_resumes(turns: pd.DataFrame, pairs: pd.DataFrame | None = None) -> pd.DataFrame:
    """``conversation_turns`` with every resume folded into the turn it continues (see the module
    docstring); adds ``n_resumes`` (0 for a turn never resumed), ``resume_gap_ms``,
    ``resume_error`` and ``resume_events_lost``."""
    out = turns.copy(deep=False)  # copy-on-write (pandas 3): a column is copied only when changed
    out["n_resumes"] = 0
    out["resume_gap_ms"] = np.nan
    out["resume_error"] = pd.Series(None, index=out.index, dtype="object")
    out["resume_events_lost"] = pd.Series(None, index=out.index, dtype="object")
    pairs = resume_pairs(turns) if pairs is None else pairs
    if pairs.empty:
        return out
    by_flow = out.drop_duplicates("flow_id").set_index("flow_id", drop=False)
    position = pd.Series(range(len(out)), index=out["flow_id"]).groupby(level=0).first()
    for into, group in pairs.sort_values(["into_flow_id", "part"]).groupby("into_flow_id", sort=False):
        origin = by_flow.loc[into]
        parts = [(by_flow.loc[f], float(s)) for f, s in zip(group["flow_id"], group["shift_ms"], strict=True)]
        row = position[into]
        for column, value in _fold(origin, parts).items():
            if column in ("assistant_text", "resume_error", "assistant_message_id", "status", "finish_type",
                          "error", "resume_events_lost", "title", "model_slug", "server_model_slug"):
                out[column] = out[column].astype("object")
            out.iat[row, out.columns.get_loc(column)] = value
    consumed = set(pairs["flow_id"])
    return out[~out["flow_id"].isin(consumed)].reset_index(drop=True)


def resumed_messages(merged: pd.DataFrame, pairs: pd.DataFrame, last_seen: pd.Series) -> pd.DataFrame:
    """A ``messages``-shaped sighting (source ``stream``) of every resumed answer as the page ends up
    with it: the stitched text and final status, seen when its last part was (``last_seen``: flow id
    -> started_at of the last part). Lets the conversation tree show the whole answer."""
    streamed = pairs[pairs["streamed"]] if not pairs.empty else pairs
    if streamed.empty or "assistant_message_id" not in merged.columns:
        return pd.DataFrame(columns=["conversation_id", "message_id", "role", "content_type", "text",
                                     "status", "source", "flow_id", "seen_at"])
    rows = merged[merged["flow_id"].isin(set(streamed["into_flow_id"])) & merged["assistant_message_id"].notna()]
    return pd.DataFrame({
        "conversation_id": rows["conversation_id"], "message_id": rows["assistant_message_id"], "role": "assistant",
        "content_type": "text", "text": rows["assistant_text"], "model_slug": rows.get("model_slug"),
        "status": rows["status"], "source": "stream", "flow_id": rows["flow_id"],
        "seen_at": rows["flow_id"].map(last_seen),
    })


def last_part_starts(turns: pd.DataFrame, pairs: pd.DataFrame) -> pd.Series:
    """flow id of a resumed turn -> the start of its last streamed part."""
    if pairs.empty:
        return pd.Series(dtype="object")
    starts = turns.drop_duplicates("flow_id").set_index("flow_id")["started_at"]
    streamed = pairs[pairs["streamed"]]
    last = streamed.sort_values("part").groupby("into_flow_id")["flow_id"].last()
    return last.map(starts)


def mark_controls(turns: pd.DataFrame, controls: pd.DataFrame | None) -> pd.DataFrame:
    """Adds ``stopped_by_user`` and ``stream_status`` from ``stream_controls`` (module docstring)."""
    out = turns.copy(deep=False)  # copy-on-write (pandas 3): a column is copied only when changed
    out["stopped_by_user"] = False
    out["stream_status"] = pd.Series(None, index=out.index, dtype="object")
    if controls is None or controls.empty or out.empty:
        return out
    controls = controls.dropna(subset=["conversation_id", "at"]).sort_values("at", kind="stable")
    timed = out[out["conversation_id"].notna() & out["started_at"].notna()]
    timed = timed.reset_index().sort_values("started_at", kind="stable")
    if timed.empty or controls.empty:
        return out
    joined = pd.merge_asof(controls[["conversation_id", "at", "kind", "status"]],
                           timed[["index", "conversation_id", "started_at"]],
                           left_on="at", right_on="started_at", by="conversation_id", direction="backward")
    joined = joined.dropna(subset=["index"])
    stops = joined.loc[joined["kind"] == "stop", "index"].astype(int).unique()
    out.loc[stops, "stopped_by_user"] = True
    status = joined[(joined["kind"] == "stream_status") & joined["status"].notna()]
    if not status.empty:
        last = status.groupby("index")["status"].last()
        out.loc[last.index.astype(int), "stream_status"] = last.to_numpy()
    return out


def resumed_stream_events(events: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """``stream_events`` of resumed turns in order across their flows: ``turn_flow_id`` (the first
    POST's flow), ``part`` (0 = the POST, 1… = resumes), ``turn_seq`` (0… across the parts) and
    ``turn_offset_ms`` (from the first POST's start) added; other flows are left out."""
    cols = [*events.columns, "turn_flow_id", "part", "turn_seq", "turn_offset_ms"]
    if pairs.empty or events.empty:
        return pd.DataFrame(columns=cols)
    firsts = pd.DataFrame({"flow_id": pairs["into_flow_id"].unique(), "part": 0, "shift_ms": 0.0})
    firsts["into_flow_id"] = firsts["flow_id"]
    parts = pd.concat([firsts, pairs[["flow_id", "into_flow_id", "part", "shift_ms"]]], ignore_index=True)
    joined = events.merge(parts, on="flow_id", how="inner").rename(columns={"into_flow_id": "turn_flow_id"})
    joined = joined.sort_values(["turn_flow_id", "part", "seq"], kind="stable").reset_index(drop=True)
    joined["turn_seq"] = joined.groupby("turn_flow_id").cumcount()
    joined["turn_offset_ms"] = joined["offset_ms"] + joined["shift_ms"]
    return joined[cols]
