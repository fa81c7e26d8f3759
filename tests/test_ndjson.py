"""The NDJSON line splitter: lines, bytes and arrival times, whatever the chunking."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.streams.ndjson import NDJSONParser, parse_ndjson

BODY = ('{"model":"llama3.2","message":{"role":"assistant","content":"Hé"},"done":false}\n'
        '\n'
        '{"model":"llama3.2","message":{"role":"assistant","content":" 世界"},"done":false}\r\n'
        '{"model":"llama3.2","done":true,"eval_count":2}').encode()


def test_lines_bytes_and_blank_lines():
    lines = parse_ndjson(BODY)
    assert [json.loads(line.data)["done"] for line in lines] == [False, False, True]
    assert json.loads(lines[1].data)["message"]["content"] == " 世界"  # CR dropped, UTF-8 intact
    # every byte belongs to one line: the blank line's to the line after it, the CRLF to its line
    assert sum(line.n_bytes for line in lines) == len(BODY)
    first = BODY.index(b"\n") + 1
    assert lines[0].n_bytes == first
    assert lines[1].n_bytes == BODY.index(b"\r\n") + 2 - first


def test_arrival_time_is_the_chunk_that_completed_the_line():
    parser = NDJSONParser()
    cut = BODY.index(b"\n") - 5
    assert parser.feed(BODY[:cut], 1.0) == []
    got = parser.feed(BODY[cut:cut + 10], 2.0)
    assert [line.at for line in got] == [2.0]
    rest = parser.feed(BODY[cut + 10:], 3.0) + parser.close(4.0)
    assert [line.at for line in rest] == [3.0, 4.0]  # the unterminated last line counts at close


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(BODY)), max_size=12))
def test_any_chunking_gives_the_same_lines(cuts):
    points = sorted(set(cuts))
    pieces = [BODY[a:b] for a, b in zip([0, *points], [*points, len(BODY)], strict=True)]
    parser = NDJSONParser()
    got = []
    for i, piece in enumerate(pieces):
        got.extend(parser.feed(piece, float(i)))
    got.extend(parser.close(float(len(pieces))))
    whole = parse_ndjson(BODY)
    assert [(g.data, g.n_bytes) for g in got] == [(w.data, w.n_bytes) for w in whole]
    # each line is stamped with the chunk holding its last byte (its newline)
    newlines = [i for i, b in enumerate(BODY) if b == 0x0A]
    ends = [i for i, prev in zip(newlines, [-1, *newlines], strict=False) if BODY[prev + 1:i].strip()]
    assert len(ends) == len(whole) - 1
    starts = [0, *points]
    for line, end in zip(got, ends, strict=False):
        chunk = max(i for i, s in enumerate(starts) if s <= end)
        assert line.at == float(chunk)
