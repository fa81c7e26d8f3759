"""The ``chatwire`` mitmproxy content view: a stream shown as its assembled answer, then its events.

Registered by the addon script (``contentviews.add(ChatwireContentview())``). It claims only the
flows chatwire interprets — a conversation POST's or API call's event stream, and a WebSocket
frame that carries stream items — and returns a negative priority for everything else, so other
flows keep mitmproxy's own views. The events come from the same interpreters the extractors use
(``response_events`` with the flow's per-chunk timing, ``ConversationStream``, ``ApiStream``,
``sse_text_from_frame``), so the view and the tables never disagree.
"""

from __future__ import annotations

from mitmproxy import contentviews, http

from analyzer.extract.common import chatwire_meta, is_event_stream, offset_ms, request_start, response_events
from analyzer.extract.conversation import is_resume
from analyzer.inert import inert as analyzer_inert
from analyzer.recognise import API, CONVERSATION, recognise
from analyzer.streams.conversation import ConversationStream, message_text
from analyzer.streams.openai_api import ApiStream, api_endpoint
from analyzer.streams.sse import SSEEvent, SSEParser
from analyzer.streams.websocket import sse_text_from_frame

PRIORITY = 3.0  # above mitmproxy's own views (JSON is 1) for the flows we claim
SNIPPET = 60  # characters of an event's text shown on its line


def inert(text: str, *, one_line: bool = False) -> str:
    """Text from traffic made safe to print (analyzer.inert); ``one_line`` also shows newlines and tabs."""
    shown = analyzer_inert(text)
    return shown.replace("\n", "\\x0a").replace("\t", "\\x09") if one_line else shown


def _stream_for(flow: http.HTTPFlow) -> tuple[str, ConversationStream | ApiStream] | None:
    kind = recognise(flow.request.method, flow.request.path)
    if kind == CONVERSATION:
        return "ChatGPT conversation", ConversationStream(resumed=is_resume(flow))
    if kind == API:
        endpoint = api_endpoint(flow.request.path.split("?", 1)[0])
        label = "Codex" if "/backend-api/codex/" in flow.request.path else "OpenAI API"
        return f"{label} {endpoint}", ApiStream(endpoint)
    return None


def claims(metadata: contentviews.Metadata) -> bool:
    """Is this a message the view renders (a stream answer chatwire interprets, or a stream-item frame)?"""
    flow = metadata.flow
    if not isinstance(flow, http.HTTPFlow):
        return False
    if metadata.websocket_message is not None:
        return (not metadata.websocket_message.from_client
                and sse_text_from_frame(metadata.websocket_message.content) is not None)
    return (metadata.http_message is not None and metadata.http_message is flow.response
            and is_event_stream(flow) and _stream_for(flow) is not None)


def _frame_start(flow: http.HTTPFlow, frame) -> float:
    """Offsets of a frame count from the client frame that asked (as in the extractor), else the first frame."""
    messages = flow.websocket.messages if flow.websocket else []
    start = None
    for message in messages:
        if message is frame:
            break
        if message.from_client:
            start = message.timestamp
    if start is None:
        start = next((m.timestamp for m in messages if not m.from_client), frame.timestamp)
    return start


def render(flow: http.HTTPFlow, websocket_message=None) -> str:
    """The view's text for a claimed flow (or one of its frames)."""
    if websocket_message is not None:
        title, stream = "ChatGPT stream items over WebSocket (this frame)", ConversationStream()
        start = _frame_start(flow, websocket_message)
        text = sse_text_from_frame(websocket_message.content) or ""
        parser = SSEParser()
        events = parser.feed(text, websocket_message.timestamp) + parser.close(websocket_message.timestamp)
        error = None
        timing = "frame time"
    else:
        title, stream = _stream_for(flow) or ("stream", ConversationStream())
        start = request_start(flow)
        timed = response_events(flow)
        events, error = timed.events, timed.error
        timing = "per-chunk timing" if chatwire_meta(flow).get("chunks") else "no per-chunk timing"
    lines: list[tuple[float | None, str, str | None]] = []
    for event in events:
        info = stream.feed(event.data, event.event)
        lines.append((offset_ms(event.at, start), info.type, info.text))
    return _layout(title, stream, events, lines, error, timing)


def _answer(stream: ConversationStream | ApiStream) -> tuple[str, str | None, str | None]:
    """(answer text, model, detail) of an interpreted stream."""
    if isinstance(stream, ApiStream):
        prompt, completion, _ = stream.tokens()
        usage = f"{prompt} prompt + {completion} completion tokens" if completion is not None else None
        return "".join(stream.text), stream.model, usage
    answer = stream.answer() or {}
    model = (answer.get("metadata") or {}).get("model_slug") or stream.server_model_slug
    detail = f"format {stream.format}" if stream.format else None
    if stream.handoff:
        detail = (detail + ", " if detail else "") + "handed off to a WebSocket"
    return message_text(answer) if answer else "", model, detail


def _layout(title: str, stream, events: list[SSEEvent], lines, error: str | None, timing: str) -> str:
    text, model, detail = _answer(stream)
    text_offsets = [o for o, _, t in lines if t and o is not None]
    head = [f"chatwire · {title}"]
    facts = [f"model {model}" if model else None, detail, f"{len(events)} events",
             f"TTFT {text_offsets[0]:.1f} ms" if text_offsets else None, timing]
    head.append(" · ".join(inert(f, one_line=True) for f in facts if f))
    if error:
        head.append(f"stream error: {inert(error, one_line=True)}")
    out = head + ["", "── answer ──", inert(text) if text else "(no answer text)", "", "── events ──"]
    for offset, kind, piece in lines:
        at = f"{offset:+10.1f} ms" if offset is not None else f"{'—':>13}"
        snippet = ""
        if piece:
            cut = piece if len(piece) <= SNIPPET else piece[:SNIPPET] + "…"
            snippet = "  " + inert(repr(cut), one_line=True)
        out.append(f"{at}  {inert(kind, one_line=True)}{snippet}")
    return "\n".join(out) + "\n"


class ChatwireContentview(contentviews.Contentview):
    """mitmproxy 12 content view named ``chatwire``."""

    @property
    def name(self) -> str:
        return "chatwire"

    def prettify(self, data: bytes, metadata: contentviews.Metadata) -> str:
        if not claims(metadata):
            raise ValueError("not a stream chatwire interprets")
        return render(metadata.flow, metadata.websocket_message)

    def render_priority(self, data: bytes, metadata: contentviews.Metadata) -> float:
        try:
            return PRIORITY if claims(metadata) else -1
        except Exception:  # never let a view choice break mitmproxy's display
            return -1


view = ChatwireContentview()


def register() -> None:
    """Add the view to mitmproxy's registry (the addon script calls this on load; idempotent)."""
    contentviews.add(view)
