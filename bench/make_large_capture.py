"""Write a large capture for the ``analyze report`` benchmark, straight to Parquet.

Default size: 100,000 conversation turns with 100 stream events each (10,000,000 events: a few
non-text events around ~95 text events per answer), 1,000,000 latency beacons (one per turn, the
rest for answers whose conversation POST was not captured), 200,000 messages, 40,000 Segment and
Statsig events. Columns are generated with NumPy and written with Arrow in parts of about a
million rows, using the capture schema of ``analyzer/schema.py`` and the project's own atomic
part writer, so the result is a capture like any other (DuckDB reads the same files).

Usage:
    python bench/make_large_capture.py captures/large.parquet
    python bench/make_large_capture.py /tmp/small.parquet --turns 2000 --beacons 20000
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analyzer.schema import TABLES
from analyzer.store.writer import init_capture, write_part

T0 = 1_767_261_600.0  # 2026-01-01 10:00 UTC
MODELS = np.array(["gpt-5-2", "gpt-4o", "o3-mini", "text-davinci-002-render-sha"])
MODEL_WEIGHTS = np.array([0.55, 0.25, 0.15, 0.05])
WORDS = np.array(" the| model| answers| with| plain| words| that| follow| from| your| question| and| a| small| list"
                 .split("|") + [" café", " 🙂", ".", ",", "\n\n"])
AIRPORTS = np.array(["SIN", "LHR", "FRA", "AMS", "IAD", "NRT", "CDG", "SJC"])


def _ids(prefix: int, n: int, start: int = 0) -> pa.Array:
    """``n`` distinct UUID-shaped strings (the shape of mitmproxy flow ids and message ids)."""
    return pa.array([f"{prefix:08x}-{(i >> 48) & 0xffff:04x}-4{(i >> 36) & 0xfff:03x}-8{(i >> 24) & 0xfff:03x}-"
                     f"{i & 0xffffff:012x}" for i in range(start, start + n)], pa.string())


def _rays(rng: np.random.Generator, n: int) -> pa.Array:
    hexes = rng.integers(0, 2**63, size=n, dtype=np.int64)
    airports = AIRPORTS[rng.integers(0, len(AIRPORTS), size=n)]
    return pa.array([f"{h:016x}-{a}" for h, a in zip(hexes.tolist(), airports.tolist(), strict=True)], pa.string())


def _ts(seconds: np.ndarray) -> pa.Array:
    return pa.array((seconds * 1_000_000).astype("int64"), pa.int64()).cast(TABLES["flows"].field("started_at").type)


def _write(path: Path, name: str, columns: dict[str, pa.Array], part: int) -> None:
    schema = TABLES[name]
    n = len(next(iter(columns.values())))
    arrays = [columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in schema]
    table = pa.Table.from_arrays([a.cast(f.type) for a, f in zip(arrays, schema, strict=True)], schema=schema)
    write_part(path / name, table, f"part-{part:06d}.parquet")


def make(path: Path, turns: int, events_per_turn: int, beacons: int, analytics: int, seed: int = 7,
         ttft_shift_ms: float = 0.0, id_offset: int = 0, start: float = T0) -> dict:
    """Write the capture; ``id_offset`` shifts every id (captures of one dataset must not share flow ids),
    ``start`` is the epoch of its first answer."""
    rng = np.random.default_rng(seed)
    if path.exists():
        shutil.rmtree(path)
    init_capture(path)
    for name in TABLES:  # drop the empty placeholder parts: every table gets real parts below
        for p in (path / name).glob("part-00000000-empty.parquet"):
            if name in {"flows", "conversation_turns", "stream_events", "latency_beacons", "messages",
                        "segment_events", "statsig_events"}:
                p.unlink()

    # -- conversation turns and their flows -----------------------------------------------------
    turn_ids = _ids(0x7e57f10, turns, id_offset)
    conv_ids = _ids(0xc0417e5, max(turns // 5, 1), id_offset)
    conv_of_turn = pc.take(conv_ids, pa.array(rng.integers(0, len(conv_ids), size=turns)))
    started = start + np.sort(rng.uniform(0, 30 * 86400, size=turns))
    models = MODELS[rng.choice(len(MODELS), size=turns, p=MODEL_WEIGHTS)]
    rays = _rays(rng, turns)
    n_pre = 3  # delta_encoding, resume token, the assistant message "add" (empty text)
    n_text = events_per_turn - n_pre - 2  # then text appends, then message_stream_complete and [DONE]
    ttft = rng.lognormal(np.log(700), 0.4, size=turns) + ttft_shift_ms  # shift: a "slower" capture (bench/compare_large.py)
    gaps = rng.lognormal(np.log(25), 0.8, size=(turns, n_text - 1)).astype("float64")
    # offsets of the text events: ttft, then cumulative gaps (one answer per row)
    text_offsets = np.concatenate([ttft[:, None], ttft[:, None] + np.cumsum(gaps, axis=1)], axis=1)
    e2e = text_offsets[:, -1] + 30.0
    flows = {
        "flow_id": turn_ids, "kind": pa.array(["conversation"] * turns), "source": pa.array(["live"] * turns),
        "method": pa.array(["POST"] * turns), "host": pa.array(["chatgpt.com"] * turns),
        "path": pa.array(["/backend-api/f/conversation"] * turns), "status_code": pa.array(np.full(turns, 200)),
        "started_at": _ts(started), "ended_at": _ts(started + e2e / 1000), "cf_ray": rays,
        "streamed": pa.array(np.ones(turns, dtype=bool)), "duration_ms": pa.array(e2e),
    }
    _write(path, "flows", flows, 0)
    _write(path, "conversation_turns", {
        "flow_id": turn_ids, "conversation_id": conv_of_turn, "action": pa.array(["next"] * turns),
        "requested_model": pa.array(models), "model_slug": pa.array(models),
        "stream_format": pa.array(["v1"] * turns), "status": pa.array(["finished_successfully"] * turns),
        "started_at": _ts(started), "ttft_ms": pa.array(ttft), "e2e_ms": pa.array(e2e),
        "n_events": pa.array(np.full(turns, events_per_turn)), "n_text_events": pa.array(np.full(turns, n_text)),
        "cf_ray": rays,
    }, 0)

    # -- stream events, about a million rows per part ---------------------------------------------
    per_part = max(1, 1_000_000 // events_per_turn)
    words = pa.array(WORDS)
    part = 0
    for lo in range(0, turns, per_part):
        hi = min(turns, lo + per_part)
        k = hi - lo
        offsets = np.empty((k, events_per_turn))
        offsets[:, :n_pre] = np.array([2.0, 3.0, 5.0]) + (ttft[lo:hi, None] * 0.5)
        offsets[:, n_pre:n_pre + n_text] = text_offsets[lo:hi]
        offsets[:, -2] = e2e[lo:hi] - 10
        offsets[:, -1] = e2e[lo:hi]
        is_text = np.zeros(events_per_turn, dtype=bool)
        is_text[n_pre:n_pre + n_text] = True
        text_codes = rng.integers(0, len(WORDS), size=(k, events_per_turn))
        text = pc.take(words, pa.array(text_codes.ravel()))
        mask = np.broadcast_to(is_text, (k, events_per_turn)).ravel()
        text = pc.if_else(pa.array(mask), text, pa.array([""], pa.string())[0])  # "" on the non-text events
        text = pc.if_else(pa.array(np.broadcast_to(np.arange(events_per_turn) < n_pre - 1,
                                                   (k, events_per_turn)).ravel()), pa.nulls(len(text), pa.string()),
                          text)
        types = np.array(["delta_encoding", "resume_conversation_token"] + ["delta"] * (1 + n_text)
                         + ["message_stream_complete", "done"])
        rows = np.repeat(np.arange(lo, hi), events_per_turn)
        _write(path, "stream_events", {
            "flow_id": pc.take(turn_ids, pa.array(rows)),
            "seq": pa.array(np.tile(np.arange(events_per_turn), k)),
            "at": _ts(started[rows] + offsets.ravel() / 1000),
            "offset_ms": pa.array(offsets.ravel()),
            "event": pa.array(np.tile(np.where(types == "delta", "delta", ""), k)),
            "type": pa.array(np.tile(types, k)),
            "text": text,
            "n_bytes": pa.array(np.full(k * events_per_turn, 60)),
        }, part)
        part += 1

    # -- latency beacons: one per captured turn, the rest for turns that were not captured -------
    beacon_flow_ids = _ids(0xbeac0f1, beacons, id_offset)
    matched = min(turns, beacons)
    ray_list = pa.concat_arrays([rays.slice(0, matched), _rays(rng, beacons - matched)])
    b_models = np.concatenate([models[:matched], MODELS[rng.choice(len(MODELS), size=beacons - matched,
                                                                   p=MODEL_WEIGHTS)]])
    count = rng.integers(20, 1500, size=beacons).astype("float64")
    count[:matched] = n_text + rng.integers(-5, 30, size=matched)
    first = np.concatenate([ttft[:matched] + rng.lognormal(np.log(120), 0.5, size=matched),
                            rng.lognormal(np.log(900), 0.5, size=beacons - matched)])
    total = first + count * rng.lognormal(np.log(25), 0.3, size=beacons)
    sent = np.concatenate([started[:matched] + e2e[:matched] / 1000 + 0.5,
                           T0 + rng.uniform(0, 30 * 86400, size=beacons - matched)])
    for i, lo in enumerate(range(0, beacons, 500_000)):
        hi = min(beacons, lo + 500_000)
        s = slice(lo, hi)
        _write(path, "latency_beacons", {
            "flow_id": beacon_flow_ids.slice(lo, hi - lo), "sent_at": _ts(sent[s]),
            "server_request_id": ray_list.slice(lo, hi - lo), "model": pa.array(b_models[s]),
            "preflight_time_ms": pa.array(rng.uniform(0, 60, size=hi - lo)), "count_tokens": pa.array(count[s]),
            "ts_first_token_ms": pa.array(first[s]), "ts_total_request_ms": pa.array(total[s]),
            "ts_median_token_without_first_ms": pa.array(rng.lognormal(np.log(20), 0.4, size=hi - lo)),
            "ts_p95_token_without_first_ms": pa.array(rng.lognormal(np.log(90), 0.4, size=hi - lo)),
            "ts_p99_token_without_first_ms": pa.array(rng.lognormal(np.log(150), 0.4, size=hi - lo)),
        }, i)
        _write(path, "flows", {
            "flow_id": beacon_flow_ids.slice(lo, hi - lo), "kind": pa.array(["latency_beacon"] * (hi - lo)),
            "source": pa.array(["live"] * (hi - lo)), "method": pa.array(["POST"] * (hi - lo)),
            "host": pa.array(["chatgpt.com"] * (hi - lo)), "path": pa.array(["/backend-api/lat/r"] * (hi - lo)),
            "status_code": pa.array(np.full(hi - lo, 200)), "started_at": _ts(sent[s]),
            "ended_at": _ts(sent[s] + 0.08),
        }, i + 1)

    # -- messages: the user message and the answer of every turn --------------------------------
    user_ids = _ids(0x05e40001, turns, id_offset)
    answer_ids = _ids(0xa45e0001, turns, id_offset)
    _write(path, "messages", {
        "conversation_id": pa.concat_arrays([conv_of_turn.combine_chunks() if hasattr(conv_of_turn, "combine_chunks")
                                             else conv_of_turn] * 2),
        "message_id": pa.concat_arrays([user_ids, answer_ids]),
        "parent_id": pa.concat_arrays([pa.array(["client-created-root"] * turns), user_ids]),
        "role": pa.array(["user"] * turns + ["assistant"] * turns),
        "source": pa.array(["request"] * turns + ["stream"] * turns),
        "flow_id": pa.concat_arrays([turn_ids, turn_ids]),
    }, 0)

    # -- analytics ------------------------------------------------------------------------------
    conv_list = conv_ids.to_pylist()
    seg_conv = [conv_list[i] for i in rng.integers(0, len(conv_list), size=analytics)]
    events = np.array(["Message Sent", "Model Switched", "Page Viewed", "Copy Message"])
    _write(path, "segment_events", {
        "flow_id": _ids(0x5e6e0001, analytics, id_offset), "sent_at": _ts(T0 + rng.uniform(0, 30 * 86400, size=analytics)),
        "host": pa.array(["chatgpt.com"] * analytics), "type": pa.array(["track"] * analytics),
        "event": pa.array(events[rng.integers(0, len(events), size=analytics)]),
        "user_id": pa.array(["user-bench"] * analytics),
        "anonymous_id": pa.array([f"anon-{i % 7}" for i in range(analytics)]),
        "page_path": pa.array([f"/c/{c}" for c in seg_conv]), "conversation_id": pa.array(seg_conv),
        "context": pa.array([json.dumps({"traits": {"workspace_id": "ws-bench"}})] * analytics),
    }, 0)
    _write(path, "statsig_events", {
        "flow_id": _ids(0x57a70001, analytics, id_offset), "sent_at": _ts(T0 + rng.uniform(0, 30 * 86400, size=analytics)),
        "host": pa.array(["ab.chatgpt.com"] * analytics),
        "event_name": pa.array(["chatgpt_conversation_turn"] * analytics), "user_id": pa.array(["user-bench"] * analytics),
        "stable_id": pa.array(["stable-bench"] * analytics),
        "custom_ids": pa.array([json.dumps({"workspaceID": "ws-bench", "deviceID": "dev-bench"})] * analytics),
    }, 0)
    return {"turns": turns, "stream_events": turns * events_per_turn, "latency_beacons": beacons,
            "messages": 2 * turns, "segment_events": analytics, "statsig_events": analytics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--turns", type=int, default=100_000)
    parser.add_argument("--events-per-turn", type=int, default=100)
    parser.add_argument("--beacons", type=int, default=1_000_000)
    parser.add_argument("--analytics", type=int, default=20_000, help="Segment and Statsig events, each")
    parser.add_argument("--seed", type=int, default=7, help="Random seed (another seed: another sample)")
    parser.add_argument("--ttft-shift-ms", type=float, default=0.0, help="Added to every TTFT (and so to E2E)")
    parser.add_argument("--id-offset", type=int, default=0,
                        help="shift every id by this much (several captures of one dataset: distinct flow ids)")
    args = parser.parse_args()
    t = time.perf_counter()
    counts = make(args.path, args.turns, args.events_per_turn, args.beacons, args.analytics, args.seed,
                  args.ttft_shift_ms, args.id_offset)
    print(f"wrote {args.path} in {time.perf_counter() - t:.1f}s: "
          + ", ".join(f"{k} {v:,}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
