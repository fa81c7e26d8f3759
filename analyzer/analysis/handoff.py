"""Joining answers that were handed off to a WebSocket back to the POST that asked for them.

A conversation POST may answer with a hand-off (2024: JSON ``{wss_url}``; 2025–26: an SSE
``stream_handoff`` event) and the answer then streams on a WebSocket, recorded as its own turn
``<ws flow id>#<n>``. Both rows are one user turn. They are joined on (conversation_id,
user_message_id) — the socket's answer names its user message as its parent — and become one row:
the POST's request start, cf-ray (the beacon's join key), model request and user text, with the
socket's answer, events and timing. TTFT and E2E are shifted to count from the POST's request
start, the start the user experienced. Pure: DataFrames in, a DataFrame out.
"""

from __future__ import annotations

import pandas as pd

TAKE_FROM_POST = ("started_at", "cf_ray", "action", "requested_model", "parent_message_id", "user_text", "path")


PAIR_COLUMNS = ("flow_id", "stream_format", "conversation_id", "user_message_id", "started_at")


def handoff_pairs(turns: pd.DataFrame) -> pd.DataFrame:
    """One row per hand-off: ``index`` (the socket answer's row in ``turns``), the socket row's
    columns, and the POST's columns suffixed ``_post``. The one definition of the pairing, used by
    the report and by ``analyze serve``.

    A regeneration re-asks with the same user message: the k-th POST for a user message is paired
    with the k-th socket answer to it, both in time order.
    """
    if turns.empty or not set(PAIR_COLUMNS) <= set(turns.columns):
        return pd.DataFrame(columns=["index", "flow_id", "flow_id_post"])
    is_socket = turns["flow_id"].astype("str").str.contains("#", regex=False)
    is_post = (turns["stream_format"] == "websocket") & ~is_socket
    key = ["conversation_id", "user_message_id", "nth"]
    posts = turns[is_post].sort_values("started_at")
    posts = posts.assign(nth=posts.groupby(key[:2], dropna=False).cumcount()).dropna(subset=key[:2])
    sockets = turns[is_socket].sort_values("started_at").reset_index()
    sockets = sockets.assign(nth=sockets.groupby(key[:2], dropna=False).cumcount())
    return sockets.merge(posts, on=key, how="inner", suffixes=("", "_post"))


def merge_handoffs(turns: pd.DataFrame) -> pd.DataFrame:
    """``conversation_turns`` with each hand-off POST folded into the WebSocket answer it started."""
    joined = handoff_pairs(turns)
    if joined.empty:
        return turns
    out = turns.copy(deep=False)  # copy-on-write (pandas 3): a column is copied only when changed
    rows = joined["index"].to_numpy()
    shift_ms = (joined["started_at"] - joined["started_at_post"]).dt.total_seconds().to_numpy() * 1000.0
    for column in ("ttft_ms", "e2e_ms"):
        if column in out.columns:
            out.loc[rows, column] = out.loc[rows, column].to_numpy() + shift_ms
    for column in TAKE_FROM_POST:
        if column in out.columns and f"{column}_post" in joined.columns:
            from_post = joined[f"{column}_post"].set_axis(rows)
            out.loc[rows, column] = from_post.fillna(out.loc[rows, column])
    consumed = set(joined["flow_id_post"])
    return out[~out["flow_id"].isin(consumed)].reset_index(drop=True)
