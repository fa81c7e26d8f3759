"""The pure stream parsers: SSE with arrival times, content decoding, v1 deltas, legacy snapshots."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import brotli
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.streams.conversation import ConversationStream, message_text
from analyzer.streams.decoding import BodyDecodeError, BodyDecoder, decode_body
from analyzer.streams.delta_v1 import DeltaError, apply_delta
from analyzer.streams.openai_api import ApiStream
from analyzer.streams.sse import SSEParser, parse_sse
from analyzer.streams.websocket import sse_text_from_frame

STREAMS = Path(__file__).parent / "fixtures" / "streams"
V1 = (STREAMS / "v1_answer.sse").read_bytes()
LEGACY = (STREAMS / "legacy_answer.sse").read_bytes()


def run(body: str) -> tuple[ConversationStream, list]:
    stream = ConversationStream()
    infos = [stream.feed(e.data, e.event) for e in parse_sse(body)]
    return stream, infos


# -- SSE ----------------------------------------------------------------------------------------

def test_sse_fields_comments_multiline_and_line_endings():
    body = ": comment\r\nevent: delta\r\ndata: a\r\ndata: b\r\nid: 7\r\n\r\ndata:no-space\n\n\ufeffdata: x\rretry: 10\r\r"
    events = parse_sse(body)
    # the id persists (the spec's last-event-id buffer); a BOM past the start is just a character,
    # so "\ufeffdata" is an unknown field; a blank line without data dispatches nothing
    assert [(e.event, e.data, e.id) for e in events] == [("delta", "a\nb", "7"), (None, "no-space", "7")]


def test_sse_bom_only_at_start_and_cr_split_across_chunks():
    parser = SSEParser()
    out = parser.feed("\ufeffdata: one\r", at=1.0)
    assert out == []
    out = parser.feed("\n\r\n", at=2.0)  # CRLF split over chunks, then the blank line
    assert [(e.data, e.at) for e in out] == [("one", 2.0)]


def test_sse_arrival_time_is_the_chunk_that_completed_the_event():
    parser = SSEParser()
    assert parser.feed("data: hel", at=1.0) == []
    assert parser.feed("lo\n", at=2.0) == []
    events = parser.feed("\ndata: next\n\n", at=3.0)
    assert [(e.data, e.at) for e in events] == [("hello", 3.0), ("next", 3.0)]


def test_sse_close_keeps_an_unterminated_last_event():
    parser = SSEParser()
    parser.feed("data: [DONE]", at=5.0)
    assert [(e.data, e.at) for e in parser.close(at=6.0)] == [("[DONE]", 6.0)]


def test_sse_n_bytes_adds_up_to_the_body():
    body = V1.decode()
    events = parse_sse(body)
    assert sum(e.n_bytes for e in events) == len(body.encode())


_SSE_LINES = st.sampled_from([
    "data: x", "data:y", "data: ", "data", "event: delta", "event:", "event: a:b", "id: 7", "retry: 5",
    ": comment", "", "", "", "data: {\"v\": \"é\"}", "other: z", " data: lead", "event: e\r", "data: \ufeff",
])


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(_SSE_LINES, max_size=30), newline_end=st.booleans())
def test_whole_event_fast_path_matches_the_line_rules(lines, newline_end):
    """Fed whole, the usual event shapes go through one regex; fed a character at a time, through
    the line-by-line rules only. Both must give the same events, fields and byte counts."""
    body = "\n".join(lines) + ("\n" if newline_end else "")
    whole = SSEParser()
    fast = whole.feed(body, at=1.0) + whole.close(at=1.0)
    slow_parser = SSEParser()
    slow = [e for ch in body for e in slow_parser.feed(ch, at=1.0)] + slow_parser.close(at=1.0)
    assert fast == slow
    assert sum(e.n_bytes for e in fast) <= len(body.encode())


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points + [len(data)]:
        pieces.append(data[last:p])
        last = p
    return [p for p in pieces if p]


@settings(max_examples=150, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40),
       encoding=st.sampled_from([None, "gzip", "deflate", "br", "zstd"]),
       legacy=st.booleans())
def test_any_chunking_yields_the_same_events_and_text(cuts, encoding, legacy):
    plain = LEGACY if legacy else V1
    if encoding == "gzip":
        raw = gzip.compress(plain)
    elif encoding == "deflate":
        raw = zlib.compress(plain)
    elif encoding == "br":
        raw = brotli.compress(plain)
    elif encoding == "zstd":
        raw = zstandard.ZstdCompressor().compress(plain)
    else:
        raw = plain
    decoder, parser = BodyDecoder(encoding), SSEParser()
    events = []
    for i, piece in enumerate(_split(raw, cuts)):
        events += parser.feed(decoder.decode(piece), at=float(i))
    events += parser.feed(decoder.finish()) + parser.close()
    reference = parse_sse(plain.decode())
    assert [(e.event, e.data) for e in events] == [(e.event, e.data) for e in reference]
    stream = ConversationStream()
    text = "".join(i.text or "" for i in (stream.feed(e.data, e.event) for e in events))
    assert text == message_text(stream.answer())


# -- decoding -----------------------------------------------------------------------------------

def test_decoding_raw_deflate_stacked_and_errors():
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    body = raw_deflate.compress(b"data: x\n\n") + raw_deflate.flush()
    assert decode_body(body, "deflate") == "data: x\n\n"
    stacked = brotli.compress(gzip.compress(b"abc"))
    assert decode_body(stacked, "gzip, br") == "abc"
    with pytest.raises(BodyDecodeError):
        decode_body(b"not gzip at all", "gzip")
    with pytest.raises(BodyDecodeError):
        BodyDecoder("compress")


# -- v1 deltas ----------------------------------------------------------------------------------

def test_apply_delta_ops():
    root = {"message": {"content": {"parts": ["ab"]}, "metadata": {"a": 1}, "list": [1]}}
    apply_delta(root, "/message/content/parts/0", "append", "cd")
    apply_delta(root, "/message/metadata", "append", {"b": 2})
    apply_delta(root, "/message/list", "append", [2, 3])
    apply_delta(root, "/message/content/parts/0", "truncate", 3)
    apply_delta(root, "/message/status", "replace", "done")
    apply_delta(root, "/message/list/-", "add", 4)
    apply_delta(root, "/message/metadata/a", "remove", None)
    assert root == {"message": {"content": {"parts": ["abc"]}, "metadata": {"b": 2}, "list": [1, 2, 3, 4],
                                "status": "done"}}
    root = apply_delta(root, "", "patch", [{"p": "/message/content/parts/0", "o": "append", "v": "!"}])
    assert root["message"]["content"]["parts"] == ["abc!"]
    with pytest.raises(DeltaError):
        apply_delta(root, "/message/content/parts/0", "truncate", "x")
    with pytest.raises(DeltaError):
        apply_delta(root, "message", "add", 1)
    with pytest.raises(DeltaError):
        apply_delta(root, "/message/content/parts/9", "append", "x")


def test_v1_stream_text_messages_and_metadata():
    stream, infos = run(V1.decode())
    assert stream.format == "v1"
    assert [i.text for i in infos if i.text] == ["Nile", ", Amazon", " and", " Danube."]
    answer = stream.answer()
    assert answer["id"] == "asst-1" and answer["status"] == "finished_successfully" and answer["end_turn"] is True
    assert answer["metadata"]["finish_details"] == {"type": "stop"}
    assert answer["metadata"]["model_slug"] == "gpt-5-2" and stream.server_model_slug == "i-mini"
    assert list(stream.messages) == ["sys-1", "user-1", "asst-1"]
    assert stream.title == "Three rivers" and stream.done and stream.completed
    assert stream.conversation_id == "67a0c1de-0000-8000-9000-00000000c0de"
    assert infos[0].type == "delta_encoding" and infos[-1].type == "done"


def test_v1_thoughts_are_not_visible_text():
    events = [
        {"v": {"message": {"id": "t", "author": {"role": "assistant"}, "content": {"content_type": "thoughts", "thoughts": []},
                           "status": "in_progress", "metadata": {}, "recipient": "all"}}},
        {"p": "/message/content/thoughts", "o": "append", "v": [{"content": "hmm"}]},
        {"v": {"message": {"id": "a", "author": {"role": "assistant"}, "content": {"content_type": "text", "parts": ["Hi"]},
                           "status": "in_progress", "metadata": {}, "recipient": "all"}}},
        {"p": "/message/content/parts/0", "o": "append", "v": " there"},
    ]
    stream = ConversationStream()
    texts = [stream.feed(json.dumps(e), "delta").text for e in events]
    assert texts == [None, None, "Hi", " there"]
    assert stream.answer()["id"] == "a"


def test_legacy_stream_diffs_snapshots_and_skips_repeats():
    stream, infos = run(LEGACY.decode())
    assert stream.format == "legacy"
    texts = [i.text for i in infos]
    assert [t for t in texts if t] == ["Hello", "! It", " is nice", " to meet you."]
    # the fifth event repeats "Hello! It" (metadata only): not a text event
    assert texts[4] is None and infos[4].type == "message"
    assert stream.answer()["metadata"]["finish_details"]["type"] == "stop"
    assert stream.title == "Greeting"


def test_invalid_json_event_is_counted_not_fatal():
    stream, infos = run('data: {"broken\n\ndata: [DONE]\n\n')
    assert infos[0].type == "invalid_json" and stream.errors and stream.done


# -- API streams and websocket frames -----------------------------------------------------------

def test_chat_completion_chunks_and_usage():
    api = ApiStream("chat.completions")
    lines = [
        {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}], "usage": None},
        {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": "Hi"}}], "usage": None},
        {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None},
        {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}},
    ]
    infos = [api.feed(json.dumps(x)) for x in lines] + [api.feed("[DONE]")]
    assert [i.text for i in infos] == [None, "Hi", None, None, None]
    assert infos[3].type == "usage" and api.tokens() == (5, 1, 6) and api.finish_reason == "stop" and api.done


def test_responses_events():
    api = ApiStream("responses")
    api.feed(json.dumps({"type": "response.created", "response": {"id": "r1", "model": "gpt-4.1", "status": "in_progress"}}))
    info = api.feed(json.dumps({"type": "response.output_text.delta", "delta": "Yo"}), "response.output_text.delta")
    api.feed(json.dumps({"type": "response.completed", "response": {"id": "r1", "status": "completed",
                                                                    "usage": {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4}}}))
    assert info.text == "Yo" and api.tokens() == (3, 1, 4) and api.finish_reason == "completed" and api.done


def test_websocket_frames_both_generations():
    import base64

    sse = 'data: {"v": " hi"}\n\n'
    frame_2024 = json.dumps({"type": "message", "from": "group", "dataType": "json",
                             "data": {"body": base64.b64encode(sse.encode()).decode(), "more_body": True}})
    frame_2025 = json.dumps({"type": "message", "payload": {"type": "conversation-turn-stream",
                                                            "payload": {"type": "stream-item", "encoded_item": sse}}})
    assert sse_text_from_frame(frame_2024) == sse
    assert sse_text_from_frame(frame_2025.encode()) == sse
    assert sse_text_from_frame(f"[{frame_2025}, {frame_2025}]") == sse + sse  # batched items
    assert sse_text_from_frame('{"type": "ack"}') is None and sse_text_from_frame(b"\xff\x00") is None


class _NoAppendCache(ConversationStream):
    """The same interpreter with the cached append target switched off: every delta resolves its path."""

    def _delta(self, obj):
        self._append_to = None
        return super()._delta(obj)


_PART = "/message/content/parts/0"
_V1_EVENTS = st.one_of(
    st.builds(lambda t: ("delta", {"v": t}), st.text(max_size=3)),
    st.builds(lambda t: ("delta", {"p": _PART, "o": "append", "v": t}), st.text(max_size=3)),
    st.builds(lambda t: ("delta", {"v": t, "c": 3}), st.text(max_size=3)),
    st.builds(lambda i, r: ("delta", {"p": "", "o": "add", "v": {"message": {
        "id": f"m{i}", "author": {"role": r}, "content": {"content_type": "text", "parts": [""]},
        "recipient": "all", "metadata": {}}}}), st.integers(0, 3), st.sampled_from(["assistant", "tool"])),
    st.builds(lambda t: ("delta", {"p": _PART, "o": "replace", "v": t}), st.text(max_size=3)),
    st.builds(lambda v: ("delta", {"p": "/message/recipient", "o": "replace", "v": v}), st.sampled_from(["all", "x"])),
    st.builds(lambda t: ("delta", {"p": "", "o": "patch", "v": [
        {"p": _PART, "o": "append", "v": t}, {"p": "/message/status", "o": "replace", "v": "done"}]}),
        st.text(max_size=3)),
    st.just(("delta", {"p": "/message/content/parts", "o": "append", "v": ["new part"]})),
    st.just((None, {"type": "message_marker", "marker": "user_visible_token"})),
    st.just(("delta", {"v": 5})),
)


@settings(max_examples=300, deadline=None)
@given(events=st.lists(_V1_EVENTS, max_size=25))
def test_cached_append_target_changes_nothing(events):
    """Any sequence of v1 events gives the same event infos and messages with and without the cache."""
    with_cache, without = ConversationStream(), _NoAppendCache()
    for name, obj in [("delta_encoding", "v1"), *events]:
        data = json.dumps(obj)
        assert with_cache.feed(data, name) == without.feed(data, name)
    assert with_cache.messages == without.messages
    assert with_cache.errors == without.errors
