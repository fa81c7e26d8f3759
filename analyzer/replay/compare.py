"""Turn-by-turn comparison of a web conversation with its API replay: metrics, table, JSON.

Pure functions. The metric definitions are the project's (``docs/metrics.md``,
``analyzer.analysis.latency``): a *text event* is an event with non-empty text; TTFT is the offset
of the first text event from the request start; ITL p50 is the median gap between consecutive text
events of the answer; tokens per second is the decode rate ``1000 / TPOT`` with
``TPOT = (last text offset - first text offset) / (tokens - 1)``, tokens being the API's
``completion_tokens`` (the latency beacon's ``count_tokens`` on the web side) or else the number of
text events. Answer similarity is ``difflib.SequenceMatcher.ratio`` over the two texts.
"""

from __future__ import annotations

import difflib
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field


@dataclass
class Side:
    """One answer (the web app's or the API's) reduced to what the comparison shows."""

    flow_id: str | None = None
    ttft_ms: float | None = None
    itl_p50_ms: float | None = None
    tokens_per_s: float | None = None
    e2e_ms: float | None = None
    tokens: float | None = None
    text: str | None = None
    model: str | None = None
    status_code: int | None = None
    error: str | None = None
    attempts: list[dict] = field(default_factory=list)

    @property
    def chars(self) -> int | None:
        return None if self.text is None else len(self.text)


@dataclass
class TurnComparison:
    index: int
    user_text: str
    web: Side
    api: Side | None = None  # None: not sent (interrupted before its turn)

    @property
    def similarity(self) -> float | None:
        if self.api is None or self.api.text is None or self.web.text is None:
            return None
        return difflib.SequenceMatcher(None, self.web.text, self.api.text, autojunk=False).ratio()


def answer_metrics(text_offsets: Sequence[float], tokens: float | None) -> tuple[float | None, float | None]:
    """``(itl_p50_ms, tokens_per_s)`` of one answer from its text events' offsets (in order)."""
    offsets = [o for o in text_offsets if o is not None]
    gaps = [b - a for a, b in zip(offsets, offsets[1:], strict=False)]
    itl = statistics.median(gaps) if gaps else None
    n = tokens if tokens else len(offsets)
    tps = None
    if n and n > 1 and len(offsets) > 1 and offsets[-1] > offsets[0]:
        tpot = (offsets[-1] - offsets[0]) / (n - 1)
        tps = 1000.0 / tpot
    return itl, tps


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f} s" if value >= 10_000 else f"{value:.0f} ms"


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _status(api: Side | None) -> str:
    if api is None:
        return "not sent"
    retries = max(len(api.attempts) - 1, 0)
    note = f" after {retries} retr{'y' if retries == 1 else 'ies'}" if retries else ""
    if api.error:
        return f"FAILED{note}: {_short(api.error, 60)}"
    return f"ok{note}"


def render_table(turns: Sequence[TurnComparison], *, header: str = "") -> str:
    """The side-by-side table: one block per turn, web beside API, then the summary line."""
    lines = [header] if header else []
    row = "  {:<14} {:>10} {:>10}"
    for t in turns:
        api = t.api or Side()
        lines.append(f"turn {t.index}: {_short(t.user_text, 70)!r}  [{_status(t.api)}]")
        lines.append(row.format("", "web", "api"))
        lines.append(row.format("TTFT", _ms(t.web.ttft_ms), _ms(api.ttft_ms)))
        lines.append(row.format("ITL p50", _ms(t.web.itl_p50_ms), _ms(api.itl_p50_ms)))
        lines.append(row.format("tokens/s", _num(t.web.tokens_per_s), _num(api.tokens_per_s)))
        lines.append(row.format("total", _ms(t.web.e2e_ms), _ms(api.e2e_ms)))
        lines.append(row.format("answer chars", _num(t.web.chars, "{:d}"), _num(api.chars, "{:d}")))
        sim = t.similarity
        lines.append(row.format("similarity", "", "-" if sim is None else f"{sim:.2f}"))
        lines.append("")
    lines.append(summary_line(turns))
    return "\n".join(lines) + "\n"


def _median(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summary(turns: Sequence[TurnComparison]) -> dict:
    """Counts and medians over the turns (the JSON ``summary`` object)."""
    sent = [t for t in turns if t.api is not None]
    ok = [t for t in sent if not t.api.error]
    web_ttft = _median([t.web.ttft_ms for t in ok])
    api_ttft = _median([t.api.ttft_ms for t in ok])
    return {
        "turns": len(turns),
        "sent": len(sent),
        "ok": len(ok),
        "failed": len(sent) - len(ok),
        "not_sent": len(turns) - len(sent),
        "retries": sum(max(len(t.api.attempts) - 1, 0) for t in sent),
        "web_ttft_p50_ms": web_ttft,
        "api_ttft_p50_ms": api_ttft,
        "web_tokens_per_s_p50": _median([t.web.tokens_per_s for t in ok]),
        "api_tokens_per_s_p50": _median([t.api.tokens_per_s for t in ok]),
        "similarity_p50": _median([t.similarity for t in ok]),
    }


def summary_line(turns: Sequence[TurnComparison]) -> str:
    s = summary(turns)
    parts = [f"{s['turns']} turn(s): {s['ok']} ok, {s['failed']} failed"]
    if s["not_sent"]:
        parts[0] += f", {s['not_sent']} not sent"
    if s["retries"]:
        parts.append(f"{s['retries']} retr{'y' if s['retries'] == 1 else 'ies'}")
    if s["web_ttft_p50_ms"] is not None or s["api_ttft_p50_ms"] is not None:
        parts.append(f"TTFT p50 web {_ms(s['web_ttft_p50_ms'])} vs api {_ms(s['api_ttft_p50_ms'])}")
    if s["web_tokens_per_s_p50"] is not None or s["api_tokens_per_s_p50"] is not None:
        parts.append(
            f"tokens/s p50 web {_num(s['web_tokens_per_s_p50'])} vs api {_num(s['api_tokens_per_s_p50'])}"
        )
    if s["similarity_p50"] is not None:
        parts.append(f"answer similarity p50 {s['similarity_p50']:.2f}")
    return "summary: " + "; ".join(parts)


def to_json(turns: Sequence[TurnComparison], **meta: object) -> dict:
    """Everything in the table, for programs."""

    def side(s: Side | None) -> dict | None:
        if s is None:
            return None
        d = asdict(s)
        d["chars"] = s.chars
        return d

    return {
        **meta,
        "turns": [
            {"index": t.index, "user_text": t.user_text, "web": side(t.web), "api": side(t.api), "similarity": t.similarity}
            for t in turns
        ],
        "summary": summary(turns),
    }
