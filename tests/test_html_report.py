"""``analyze report --format html``: the page's content checked as text, then opened in headless Chromium.

The capture is the shared known-timings fixture (``tests/test_latency.py``: branches, beacons, API
calls, an error) plus Segment/Statsig events (``tests/test_telemetry.py``), plus a titled
conversation with many timed answers, an HTML-injection attempt and an over-long message.

The browser tests need Debian's ``chromium`` (``.ci/run`` installs it). Where it is missing they
FAIL with a message that says so; they are never skipped.
"""

from __future__ import annotations

import re
import subprocess
import sys
from html import unescape
from pathlib import Path

import numpy as np
import pytest

from analyzer.analysis import charts, latency
from analyzer.analysis.html_report import MAX_MESSAGE_CHARS, fmt_ms, render_html
from analyzer.analysis.privacy import privacy_audit
from analyzer.analysis.report import build_report
from analyzer.cli.options import write_output
from analyzer.store import load_capture
from tests.capture_factory import merge
from tests.numbers import same_report
from tests.test_latency import T0, known_rows, write_capture
from tests.test_telemetry import telemetry_rows

SECTIONS = ["summary", "ttft", "itl", "raster", "beacon-vs-wire", "conversations", "telemetry", "privacy", "api",
            "errors"]
CHART_SECTIONS = ["ttft", "itl", "raster", "beacon-vs-wire", "telemetry", "api"]
CONV_L = "c1c1c1c1-0000-4000-8000-0000000000l1"
TITLE_L = "Trip to Lisbon"
INJECTION = '<script>document.title="owned"</script><img src="https://evil.example/x.png">'
N_LISBON = 24


def _lisbon_rows() -> dict[str, list[dict]]:
    """A titled conversation: N_LISBON timed answers (gpt-4o and o3-mini) with beacons, one branch."""
    rng = np.random.default_rng(3)
    rows: dict[str, list[dict]] = {"flows": [], "conversation_turns": [], "stream_events": [],
                                   "latency_beacons": [], "messages": []}
    parent = "client-created-root"
    for i in range(N_LISBON):
        fid, at = f"fl{i:02d}", T0 + 1000 + 60 * i
        model = "gpt-4o" if i % 3 else "o3-mini"
        ray = f"{i:016x}-LIS"
        ttft = float(rng.lognormal(np.log(600), 0.3))
        offsets = ttft + np.concatenate([[0.0], np.cumsum(rng.lognormal(np.log(30), 0.9, size=29))])
        user, answer = f"lu{i:02d}", f"la{i:02d}"
        text = f"Here is a plan for day {i}."
        if i == 1:
            text = INJECTION
        if i == 2:
            text = "long " * (MAX_MESSAGE_CHARS // 4)
        # Turn 5 edits turn 4's question: ua04 and ua05 share a parent, a branch point.
        user_parent = rows["messages"][-2]["parent_id"] if i == 5 else parent
        rows["flows"].append({"flow_id": fid, "kind": "conversation", "source": "live", "method": "POST",
                              "host": "chatgpt.com", "path": "/backend-api/conversation", "status_code": 200,
                              "started_at": at, "ended_at": at + offsets[-1] / 1000 + 0.05, "cf_ray": ray})
        rows["conversation_turns"].append({
            "flow_id": fid, "conversation_id": CONV_L, "action": "next", "requested_model": model,
            "model_slug": model, "parent_message_id": user_parent, "user_message_id": user,
            "user_text": f"question {i}", "assistant_message_id": answer, "assistant_text": text,
            "stream_format": "v1", "status": "finished_successfully", "title": TITLE_L if i == 0 else None,
            "started_at": at, "ttft_ms": float(offsets[0]), "e2e_ms": float(offsets[-1] + 20), "cf_ray": ray})
        rows["stream_events"] += [
            {"flow_id": fid, "seq": seq, "at": at + off / 1000, "offset_ms": float(off), "type": "delta",
             "text": f"w{seq} "} for seq, off in enumerate(offsets)]
        rows["latency_beacons"].append({
            "flow_id": f"lb-l{i:02d}", "sent_at": at + 5, "server_request_id": ray, "model": model,
            "count_tokens": 30.0, "ts_first_token_ms": float(offsets[0] + rng.uniform(50, 200)),
            "ts_total_request_ms": float(offsets[-1] + 250)})
        rows["messages"] += [
            {"conversation_id": CONV_L, "message_id": user, "parent_id": user_parent, "role": "user",
             "text": f"question {i}", "source": "request", "flow_id": fid, "seen_at": at, "create_time": at},
            {"conversation_id": CONV_L, "message_id": answer, "parent_id": user, "role": "assistant",
             "text": text, "model_slug": model, "source": "stream", "flow_id": fid,
             "seen_at": at + offsets[-1] / 1000, "create_time": at + offsets[0] / 1000,
             "status": "finished_successfully"},
        ]
        parent = answer
    return rows


def rich_rows() -> dict[str, list[dict]]:
    return merge(known_rows(), telemetry_rows(), _lisbon_rows())


@pytest.fixture(scope="module")
def rich_path(tmp_path_factory) -> Path:
    return write_capture(tmp_path_factory.mktemp("html") / "rich.parquet", rich_rows())


@pytest.fixture(scope="module")
def rich(rich_path):
    return load_capture(rich_path)


@pytest.fixture(scope="module")
def page(rich) -> str:
    return render_html(rich, raster_n=20)


@pytest.fixture(scope="module")
def empty_path(tmp_path_factory) -> Path:
    return write_capture(tmp_path_factory.mktemp("html") / "empty.parquet", {})


def _section(html: str, name: str) -> str:
    start = html.index(f'<section id="{name}"')
    return html[start:html.index("</section>", start)]


# -- the page as text ------------------------------------------------------------------------------


def test_report_from_shared_frames_is_build_report(rich, empty_path):
    assert same_report(build_report(rich, latency.compute_latency(rich)), build_report(rich))
    empty = load_capture(empty_path)
    assert same_report(build_report(empty, latency.compute_latency(empty)), build_report(empty))


def test_sections_in_order_each_with_a_caption(page):
    positions = [page.index(f'<section id="{name}"') for name in SECTIONS]
    assert positions == sorted(positions)
    for name in SECTIONS:
        caption = re.search(r'<p class="caption"[^>]*>(.*?)</p>', _section(page, name), re.S)
        assert caption and len(caption.group(1).split()) > 8, name


def test_page_names_nothing_a_browser_could_fetch(page):
    # Every src/href in the page (HTML and SVG) is a fragment link; no CSS url() or @import leaves the page.
    links = re.findall(r'(?:\s(?:src|href|xlink:href|action|poster)\s*=\s*")([^"]*)"', page)
    assert links and all(link.startswith("#") for link in links), [x for x in links if not x.startswith("#")]
    assert re.findall(r"url\(([^)]*)\)", page) and all(u.startswith("#") for u in re.findall(r"url\(([^)]*)\)", page))
    assert "@import" not in page and "<link" not in page and "<iframe" not in page
    assert "<!DOCTYPE svg" not in page and "<?xml" not in page
    # One inline script, the transcript toggle.
    assert page.count("<script") == 1 and "<script src" not in page


def test_numbers_are_those_of_the_rows_it_was_made_from(page):
    """The page's figures against values worked out here from the fixture rows (numpy on the raw
    row dicts), not against the ``build_report`` the page itself was rendered from."""
    rows = rich_rows()
    turns = rows["conversation_turns"]
    ttft = _section(page, "ttft")
    for model in ("gpt-4o", "o3-mini"):
        values = np.array([t["ttft_ms"] for t in turns if t.get("model_slug") == model and t.get("ttft_ms") is not None])
        n_beacons = sum(1 for b in rows["latency_beacons"] if b.get("model") == model
                        and b.get("ts_first_token_ms") is not None)
        assert re.search(rf"<td>{re.escape(model)}</td><td>proxy</td><td class=\"num\">{len(values)}</td>"
                         rf"<td class=\"num\">{re.escape(fmt_ms(np.percentile(values, 50)))}</td>"
                         rf"<td class=\"num\">{re.escape(fmt_ms(np.percentile(values, 95)))}</td>", ttft), model
        assert f"{model} · beacon (n={n_beacons:,})" in ttft
    conversations = {r["conversation_id"] for name in ("conversation_turns", "messages", "conversation_reads")
                     for r in rows.get(name, []) if r.get("conversation_id")}
    cards = dict(re.findall(r'<div class="label">([^<]+)</div>\s*<div class="value">([^<]+)</div>',
                            _section(page, "summary")))
    assert cards["Flows"] == f"{len(rows['flows']):,}" and cards["Turns"] == f"{len(turns):,}"
    assert cards["Conversations"] == f"{len(conversations):,}"
    assert cards["Models"] == str(len({t.get("model_slug") for t in turns if t.get("model_slug")}))
    assert cards["Errors"] == str(len(rows["errors"])) == "1"


def test_every_chart_section_draws_a_chart(page):
    for name in CHART_SECTIONS:
        section = _section(page, name)
        assert 'data-chart="yes"' in section and section.count("<svg") >= 1, name
        assert 'class="empty"' not in section, name
    assert _section(page, "api").count("<svg") == 3  # TTFT, ITL, token usage


def test_raster_rows_newest_first_with_hover_text(rich, page):
    raster = _section(page, "raster")
    titles = re.findall(r'<g id="raster-row-(\d+)" class="hover"><title>([^<]*)</title>', raster)
    assert [int(i) for i, _ in titles] == list(range(20))  # raster_n = 20
    newest = unescape(titles[0][1])
    # The newest answer is Lisbon turn N_LISBON - 1: its conversation title, model and TTFT.
    turns = latency.turn_latency(rich).set_index("flow_id")
    last = turns.loc[f"fl{N_LISBON - 1:02d}"]
    assert newest.startswith(f"{TITLE_L} · {last['model_slug']} · TTFT {fmt_ms(last['ttft_ms'])} · 30 text events")


def test_conversation_rows_open_active_branch_transcripts(page):
    conv = _section(page, "conversations")
    rows = re.findall(r'<tr class="conv" data-conversation="([^"]+)">', conv)
    assert rows[0] == CONV_L  # newest activity first
    lisbon = conv[conv.index(f'data-conversation="{CONV_L}"'):]
    lisbon = lisbon[:lisbon.index("</tbody>")]
    assert TITLE_L in lisbon and "1 branch point" in lisbon
    # The active branch skips the abandoned question 4; the edit (question 5) is marked as a version.
    assert "question 5" in lisbon and "question 4" not in lisbon
    assert "version 2 of 2" in lisbon
    # Message text is escaped, never markup; an over-long message is cut and says by how much.
    assert "&lt;script&gt;document.title=" in lisbon and INJECTION not in page
    assert f"… ({len('long ' * (MAX_MESSAGE_CHARS // 4)) - MAX_MESSAGE_CHARS:,} more characters)" in lisbon


def test_telemetry_and_errors(rich, page):
    tel = _section(page, "telemetry")
    assert "Message Sent (Segment)" in tel and "chatgpt_conversation_turn (Statsig)" in tel
    report = build_report(rich)
    for ident in report["telemetry"]["identifiers"]:
        assert f"<td><code>{ident['kind']}</code></td><td>{ident['host']}</td>" in tel
    errors = _section(page, "errors")
    assert "extract" in errors and "upstream closed early" in errors and "fapi2" in errors


def test_privacy_section(rich, page):
    section = _section(page, "privacy")
    audit = privacy_audit(rich)
    for host in audit.hosts.itertuples(index=False):
        assert f"<td>{host.host}</td><td>{host.party}</td>" in section
    for link in audit.links.itertuples(index=False):
        assert f"<td><code>{link.kind}</code></td>" in section
    assert len(audit.links) and "No identifier value went to more than one recipient" not in section


def test_empty_capture_says_so_in_sentences(empty_path):
    html = render_html(load_capture(empty_path))
    assert "<svg" not in html and "NaN" not in html and "nan ms" not in html
    for name in [*CHART_SECTIONS, "conversations", "errors"]:
        section = _section(html, name)
        assert re.search(r'<p class="empty">\s*\w.+\.\s*</p>', section), name


def test_cdf_and_raster_downsampling():
    values = np.random.default_rng(0).lognormal(3, 1, size=100_000)
    x, y = charts.cdf_points(values)
    assert len(x) <= charts.CDF_POINTS and x[0] == values.min() and x[-1] == values.max() and y[-1] == 1.0
    assert np.all(np.diff(x) >= 0) and np.all(np.diff(y) > 0)
    small_x, small_y = charts.cdf_points([3.0, 1.0, np.nan, 2.0])
    assert small_x.tolist() == [1.0, 2.0, 3.0] and small_y.tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])
    ticks = charts.thin(np.arange(5000.0))
    assert len(ticks) <= charts.RASTER_TICKS and ticks[0] == 0 and ticks[-1] == 4999
    assert charts.wants_log([(x, y)]) and not charts.wants_log([charts.cdf_points(np.linspace(100, 900, 50))])
    assert not charts.wants_log([charts.cdf_points([])])


def test_written_through_write_output(rich, tmp_path):
    # The CLI path: render, then the CLI's atomic writer (what `analyze report --format html -o` does).
    out = tmp_path / "report.html"
    write_output(render_html(rich), str(out))
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert not list(tmp_path.glob(".*.tmp"))


def test_cli_writes_html(rich_path, tmp_path):
    out = tmp_path / "r.html"
    script = str(Path(sys.executable).with_name("analyze"))
    proc = subprocess.run([script, "report", str(rich_path), "--format", "html", "--raster-n", "7", "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    html = out.read_text(encoding="utf-8")
    assert len(re.findall(r'<g id="raster-row-\d+"', html)) == 7
    cards = dict(re.findall(r'<div class="label">([^<]+)</div>\s*<div class="value">([^<]+)</div>',
                            _section(html, "summary")))
    assert cards["Flows"] == f"{len(rich_rows()['flows']):,}"


# -- in the browser ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """tests.browser, or a clear failure when Chromium is missing (never a skip)."""
    from tests import browser as b

    try:
        b.chromium_path()
    except b.ChromiumMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    return b


@pytest.fixture(scope="module")
def page_file(page, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("html") / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


_CHART_BOXES = """() => [...document.querySelectorAll('section[data-chart="yes"] svg.chart')].map(svg => {
  const r = svg.getBoundingClientRect();
  return {section: svg.closest('section').id, w: r.width, h: r.height,
          marks: svg.querySelectorAll('path, use').length, visible: svg.checkVisibility()};
})"""


def test_in_browser_offline_charts_visible_and_transcript_toggles(browser, page_file):
    with browser.open_page(page_file) as s:
        p = s.page
        boxes = p.evaluate(_CHART_BOXES)
        assert {b["section"] for b in boxes} == set(CHART_SECTIONS)
        for box in boxes:
            assert box["visible"] and box["w"] > 300 and box["h"] > 100 and box["marks"] > 10, box
        # The transcript opens on a click on its row and closes on a second one.
        row = p.locator(f'tr.conv[data-conversation="{CONV_L}"]')
        transcript = p.locator("#" + row.locator("button.toggle").get_attribute("aria-controls"))
        assert not transcript.is_visible()
        row.locator("td.num").first.click()
        assert transcript.is_visible() and "question 5" in transcript.inner_text()
        assert row.locator("button.toggle").get_attribute("aria-expanded") == "true"
        # The injected markup stayed text: nothing ran, nothing was fetched.
        assert INJECTION in transcript.inner_text()
        assert p.title().startswith("chatwire report")
        row.locator("button.toggle").click()
        assert not transcript.is_visible()
        # Hovering a raster row lands on its hover band (the tooltip is that band's <title>).
        band_path = p.locator("#raster-row-0 path").first
        band_path.scroll_into_view_if_needed()
        band = band_path.bounding_box()
        x, y = band["x"] + band["width"] / 2, band["y"] + band["height"] / 2
        assert p.evaluate("([x, y]) => document.elementFromPoint(x, y)?.closest('g.hover')?.id", [x, y]) \
            == "raster-row-0"
        p.mouse.move(x, y)
        assert p.evaluate("document.querySelector('#raster-row-0').matches(':hover')")
        assert s.requests == [] and s.console_errors == []


def test_in_browser_dark_scheme_and_print(browser, page_file):
    luminance = """(el) => { const m = getComputedStyle(el).color.match(/\\d+/g).map(Number);
                             return (0.2126 * m[0] + 0.7152 * m[1] + 0.0722 * m[2]) / 255; }"""
    background = """() => { const m = getComputedStyle(document.documentElement).backgroundColor.match(/\\d+/g)
                            .map(Number); return (0.2126 * m[0] + 0.7152 * m[1] + 0.0722 * m[2]) / 255; }"""
    with browser.open_page(page_file, color_scheme="dark") as s:
        svg = s.page.locator("#ttft svg.chart")
        assert s.page.evaluate(background) < 0.2
        assert svg.evaluate(luminance) > 0.7  # axis text and ticks are drawn in currentColor
        s.page.emulate_media(media="print")
        assert s.page.evaluate(background) > 0.9 and svg.evaluate(luminance) < 0.2
        assert not s.page.locator("nav").is_visible()
        assert s.requests == [] and s.console_errors == []


def test_in_browser_empty_capture(browser, empty_path, tmp_path):
    path = tmp_path / "empty.html"
    path.write_text(render_html(load_capture(empty_path)), encoding="utf-8")
    with browser.open_page(path) as s:
        for name in CHART_SECTIONS:
            assert s.page.locator(f"#{name} p.empty").first.is_visible(), name
        assert s.requests == [] and s.console_errors == []


# -- ITL and the beacon gap against hand-worked values, read in the browser -------------------------
#
# A capture built from hand-chosen event offsets and beacon times; the expected percentiles are
# worked out by hand below (NumPy's linear percentile, docs/metrics.md "Statistics", checks the
# arithmetic), never taken from the report. The page is made by the CLI and read in Chromium.

HAND_RAY = "00000000000000{:02d}-AMS"
# (flow, model, offsets of its text events in ms). Turn h1 also has an event without text between
# 470 and 530 and a [DONE] after the last: not text events, so not ITL gaps.
HAND_TURNS = [("h1", "gpt-4o", [400, 430, 470, 530, 610]),
              ("h2", "gpt-4o", [500, 510, 530, 560, 600, 650]),
              ("h3", "o3-mini", [900, 1000, 1300])]
# Pooled ITL gaps per model: gpt-4o 30 40 60 80 | 10 20 30 40 50 -> sorted 10 20 30 30 40 40 50 60 80 (n 9):
# p50 = v[4] = 40; p95: r = 7.6 -> 60 + 0.6·20 = 72; p99: r = 7.92 -> 60 + 0.92·20 = 78.4.
# o3-mini 100 300 (n 2): p50 = 200, p95 = 100 + 0.95·200 = 290, p99 = 100 + 0.99·200 = 298.
HAND_ITL = {"gpt-4o": {"n": 9, "p50": 40.0, "p95": 72.0, "p99": 78.4},
            "o3-mini": {"n": 2, "p50": 200.0, "p95": 290.0, "p99": 298.0}}
# Beacons: ts_first_token_ms per turn's cf-ray (h1 520, h2 530, h3 1100) against the proxy's TTFT
# (400, 500, 900): gaps 120, 30, 200 -> sorted 30 120 200: p50 120; p95: r = 1.9 -> 120 + 0.9·80 = 192.
# A fourth beacon names a ray no turn has: not a pair.
HAND_BEACONS = [(1, 520.0), (2, 530.0), (3, 1100.0), (99, 700.0)]
HAND_GAP = {"n": 3, "p50": 120.0, "p95": 192.0}


def test_hand_worked_values_are_numpys():
    """The oracle's arithmetic, checked once with NumPy on the hand-chosen gaps."""
    for model, want in HAND_ITL.items():
        gaps = np.concatenate([np.diff(offs) for _, m, offs in HAND_TURNS if m == model])
        assert len(gaps) == want["n"]
        for q in (50, 95, 99):
            assert np.percentile(gaps, q) == pytest.approx(want[f"p{q}"])
    ttft = {i + 1: offs[0] for i, (_, _, offs) in enumerate(HAND_TURNS)}
    gaps = [first - ttft[k] for k, first in HAND_BEACONS if k in ttft]
    assert [np.percentile(gaps, q) for q in (50, 95)] == pytest.approx([HAND_GAP["p50"], HAND_GAP["p95"]])


def _hand_rows() -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {"flows": [], "conversation_turns": [], "stream_events": [], "latency_beacons": []}
    for i, (fid, model, offs) in enumerate(HAND_TURNS):
        at, ray = T0 + 60 * i, HAND_RAY.format(i + 1)
        rows["flows"].append({"flow_id": fid, "kind": "conversation", "source": "live", "method": "POST",
                              "host": "chatgpt.com", "path": "/backend-api/conversation", "status_code": 200,
                              "started_at": at, "ended_at": at + 2, "cf_ray": ray})
        rows["conversation_turns"].append({
            "flow_id": fid, "conversation_id": f"hand-{i}", "action": "next", "requested_model": model,
            "model_slug": model, "assistant_text": "w " * len(offs), "stream_format": "v1",
            "status": "finished_successfully", "started_at": at, "ttft_ms": float(offs[0]),
            "e2e_ms": float(offs[-1] + 20), "cf_ray": ray})
        events = [(o, f"w{k} ") for k, o in enumerate(offs)]
        if fid == "h1":
            events += [(500.0, ""), (offs[-1] + 20.0, None)]  # a metadata delta and [DONE]: no text
        events.sort(key=lambda e: e[0])
        rows["stream_events"] += [{"flow_id": fid, "seq": seq, "at": at + off / 1000, "offset_ms": float(off),
                                   "type": "delta", "text": text} for seq, (off, text) in enumerate(events)]
    for j, (k, first) in enumerate(HAND_BEACONS):
        rows["latency_beacons"].append({
            "flow_id": f"hb{j}", "sent_at": T0 + 60 * j + 5, "server_request_id": HAND_RAY.format(k),
            "model": "m", "count_tokens": 5.0, "ts_first_token_ms": first, "ts_total_request_ms": 2000.0})
    return rows


@pytest.fixture(scope="module")
def hand_html(tmp_path_factory) -> Path:
    """The hand-offset capture's report, written by the ``analyze`` CLI."""
    tmp = tmp_path_factory.mktemp("hand")
    capture = write_capture(tmp / "hand.parquet", _hand_rows())
    out = tmp / "hand.html"
    proc = subprocess.run([str(Path(sys.executable).with_name("analyze")), "report", str(capture),
                           "--format", "html", "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


def _ms(cell: str) -> tuple[float, float]:
    """A displayed duration in ms and half a unit of its last digit (the rounding it may carry)."""
    m = re.fullmatch(r"\s*([\d,]+)(?:\.(\d+))?\s*(ms|s)\s*", cell)
    assert m, cell
    scale = 1000.0 if m.group(3) == "s" else 1.0
    decimals = len(m.group(2) or "")
    value = float(m.group(1).replace(",", "") + (f".{m.group(2)}" if decimals else ""))
    return value * scale, 0.5 * 10 ** -decimals * scale + 1e-9


def test_in_browser_itl_and_beacon_gap_are_the_hand_worked_values(browser, hand_html):
    with browser.open_page(hand_html) as s:
        rows = s.page.evaluate("""() => [...document.querySelectorAll('#itl table.stats tbody tr')]
                                       .map(tr => [...tr.cells].map(td => td.innerText))""")
        heads = s.page.evaluate("""() => [...document.querySelectorAll('#itl table.stats thead th')]
                                        .map(th => th.innerText.trim())""")
        note = s.page.locator("#beacon-vs-wire p.note").inner_text()
        assert s.requests == [] and s.console_errors == []
    assert heads == ["model", "source", "n", "p50", "p95", "p99"]
    shown = {r[0]: dict(zip(heads, r, strict=True)) for r in rows}
    assert set(shown) == set(HAND_ITL)
    for model, want in HAND_ITL.items():
        assert int(shown[model]["n"]) == want["n"], model
        for q in ("p50", "p95", "p99"):
            value, rounding = _ms(shown[model][q])
            assert abs(value - want[q]) <= rounding, (model, q, shown[model][q], want[q])
    m = re.fullmatch(r"(\d+) matched pairs; beacon − wire: p50 (.+?), p95 (.+?)\.", note.strip())
    assert m, note
    assert int(m.group(1)) == HAND_GAP["n"]
    for q, text in (("p50", m.group(2)), ("p95", m.group(3))):
        value, rounding = _ms(text)
        assert abs(value - HAND_GAP[q]) <= rounding, (q, text)
