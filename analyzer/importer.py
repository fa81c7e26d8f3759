"""Import HAR files and mitmproxy flow files into a capture, through the live extractor.

Every flow goes through ``analyzer.extract.extract_flow`` — the function the live addon calls —
so an import writes exactly the rows live capture would have written (``source`` aside).

All-or-nothing on disk: rows are written into a hidden sibling directory
(``.<capture>.import-<random>``). A new capture is that directory renamed into place at the end;
for an existing capture, the finished part files are moved in one by one (each move is an atomic
rename of a whole file), the ``flows`` parts last, because ``flows.flow_id`` is what the next
import de-duplicates on. If the import fails or is interrupted, the hidden directory is removed
and CAPTURE is as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from mitmproxy import http

from analyzer.recognise import recognise
from analyzer.schema import TABLES
from analyzer.sources import Source, SourceError, find_sources, iter_items
from analyzer.sources.har import HAR_NAMESPACE, file_sha256
from analyzer.store.files import describe_os_error, make_dirs
from analyzer.store.writer import EMPTY_PART, CaptureWriter, init_capture, partition_dir

log = logging.getLogger(__name__)

# Rows buffered before a flush: bounds memory on big imports (each flush writes one part per table).
FLUSH_ROWS = 20_000
IMPORT_STAGE = "import"

Progress = Callable[[int, int], None]


class ImportFailed(Exception):
    """Nothing could be imported (or CAPTURE is unusable); ``str()`` is one line for the user."""

    def __init__(self, message: str, summary: ImportSummary | None = None) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass
class ImportSummary:
    """What an import read and wrote."""

    capture: Path
    files: Counter[str] = field(default_factory=Counter)  # kind -> files read
    flows_read: int = 0
    recognised: Counter[str] = field(default_factory=Counter)  # flow kind -> flows written
    already_present: int = 0
    rows: Counter[str] = field(default_factory=Counter)  # table -> rows written
    errors: list[str] = field(default_factory=list)
    skipped_files: list[Path] = field(default_factory=list)
    damaged_files: list[Path] = field(default_factory=list)  # cut short or corrupt: whole entries kept

    @property
    def n_recognised(self) -> int:
        return sum(self.recognised.values())

    def line(self) -> str:
        """The one-line summary the CLI prints."""
        files = ", ".join(f"{n} {kind}" for kind, n in sorted(self.files.items())) or "no"
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.recognised.items()))
        parts = [
            f"{self.flows_read} flows read from {files} file(s)",
            f"{self.n_recognised} recognised" + (f" ({kinds})" if kinds else ""),
        ]
        if self.already_present:
            parts.append(f"{self.already_present} already in the capture")
        if self.damaged_files:
            parts.append(f"{len(self.damaged_files)} damaged file(s), their whole entries kept")
        if self.skipped_files:
            parts.append(f"{len(self.skipped_files)} file(s) skipped (neither HAR nor flows)")
        parts.append(f"{len(self.errors)} error{'s' if len(self.errors) != 1 else ''}")
        return "; ".join(parts) + f" -> {self.capture}"


def _existing_ids(target: Path) -> tuple[set[str], set[str]]:
    """Ids already in the capture at ``target``: of its flows, and of entries that failed to import."""
    from analyzer.store.reader import CaptureError, load_capture  # pandas: only when appending

    try:
        capture = load_capture(target, require_all=False)
        ids = set(capture.table("flows", ["flow_id"])["flow_id"].dropna())
        errors = capture.table("errors", ["flow_id", "stage"])
    except CaptureError as exc:
        raise ImportFailed(str(exc)) from exc
    return ids, set(errors.loc[errors["stage"] == IMPORT_STAGE, "flow_id"].dropna())


def _check_target(target: Path) -> bool:
    """Whether ``target`` is an existing capture to append to; ImportFailed if it is not usable."""
    if not target.exists():
        if not target.parent.is_dir():
            raise ImportFailed(f"{target}: the directory {target.parent} does not exist")
        return False
    if not target.is_dir():
        raise ImportFailed(f"{target}: exists and is not a capture (a capture is a directory)")
    if not any(target.iterdir()):
        return True  # an empty directory: becomes a capture
    if not any((target / name).is_dir() for name in TABLES):
        raise ImportFailed(f"{target}: exists and is not a capture (none of its tables is in it)")
    return True


def might_be_ours(entry: dict) -> bool:
    """Whether a HAR entry could be recognised: the same ``recognise`` that ``extract_flow`` uses.

    WebSocket entries are recognised by their frames, and entries too broken to tell are kept
    (their conversion reports what is wrong with them).
    """
    try:
        if entry.get("_webSocketMessages"):
            return True
        request = entry["request"]
        url = urlsplit(request["url"])  # the query too: Datadog logs are told apart by ddforward
        return recognise(request["method"], f"{url.path}?{url.query}" if url.query else url.path) is not None
    except Exception:
        return True


def _move_parts_in(tmp: Path, target: Path, mode: int | None = None, partition: str | None = None) -> None:
    """Move the finished parts of ``tmp`` into the capture ``target``, ``flows`` last; parts in
    partition directories (``date=…``) go to the same partition of ``target``."""
    init_capture(target, mode, partition)  # a capture missing a table gets it (empty) first
    for name in sorted(TABLES, key=lambda n: n == "flows"):
        for part in sorted((tmp / name).rglob("part-*.parquet")):
            if part.name != EMPTY_PART:
                destination = target / part.relative_to(tmp)
                make_dirs(destination.parent, mode)
                os.replace(part, destination)


def import_sources(
    paths: Iterable[str | os.PathLike],
    capture_path: str | os.PathLike,
    *,
    redact: bool = True,
    progress: Progress | None = None,
    all_flows: bool = False,
    mode: int | None = None,
    label: str | None = None,
    partition: str = "none",
) -> ImportSummary:
    """Import HAR files, flow files or directories of them into the capture at ``capture_path``.

    ``progress(bytes_read, bytes_total)`` is called as the files are read. ``mode``: of the files
    written (default 0600, directories 0700, whatever the umask). ``label``: the import run's
    ``captures.label``; ``partition`` ``date``: each flow's rows go under ``date=`` of the UTC
    date its request started (rows of no flow: the import's date). A damaged file (cut short,
    corrupt) gives its whole entries, an ``errors`` row saying where the damage is, and a place in
    ``summary.damaged_files``. Raises ImportFailed
    (CAPTURE untouched) when nothing at all could be read or CAPTURE is not a capture.
    """
    from analyzer.extract import extract_flow  # heavy: imported when an import runs

    target = Path(capture_path)
    summary = ImportSummary(capture=target)
    appending = _check_target(target)
    seen, failed = _existing_ids(target) if appending and any(target.iterdir()) else (set(), set())

    sources, errors, skipped = find_sources(paths)
    summary.errors.extend(errors)
    summary.skipped_files.extend(skipped)
    total = sum(s.size for s in sources)
    done = 0
    readable = 0  # sources that gave at least one item or ended cleanly

    tmp = target.parent / f".{target.name}.import-{uuid.uuid4().hex[:8]}"
    writer: CaptureWriter | None = None
    try:
        # one file per table (and partition): published whole
        writer = CaptureWriter(tmp, one_part=True, mode=mode, label=label, source="import", partition=partition)
        for source in sources:
            before = done

            def on_progress(pos: int, base: int = before) -> None:
                if progress:
                    progress(min(base + pos, total), total)

            ok = _import_one(source, writer, extract_flow, summary, seen, failed, redact, all_flows, on_progress)
            readable += ok
            done = before + source.size
        writer.close()
        for name, n in writer.rows_written.items():
            if n:
                summary.rows[name] += n
        if readable == 0:
            reason = summary.errors[0] if summary.errors else "no HAR or flow file found in the given paths"
            extra = f" (and {len(summary.errors) - 1} more error(s))" if len(summary.errors) > 1 else ""
            raise ImportFailed(f"nothing imported: {reason}{extra}", summary)
        if appending:
            _move_parts_in(tmp, target, mode, partition_dir(partition, writer.started_at))
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException as exc:
        if writer is not None:
            writer.abandon()
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):  # a full disk, a read-only file system: one line, not a traceback
            where = exc.filename or target
            raise ImportFailed(f"{where}: {describe_os_error(exc)}; nothing imported, {target} is as it was",
                               summary) from exc
        raise
    log.info("import: %s", summary.line())
    return summary


def _import_one(source: Source, writer: CaptureWriter, extract_flow, summary: ImportSummary, seen: set[str],
                failed: set[str], redact: bool, all_flows: bool, on_progress: Callable[[int], None]) -> bool:
    """Import one file; returns whether anything could be read from it.

    That is: at least one flow, or a clean end with no bad entry (an empty HAR or flow file is
    fine; a file whose every entry is broken is not).

    ``seen`` holds the ids of flows in the capture (skipped); ``failed`` those of entries whose
    failure is already recorded (tried again — the reader may have improved — but not recorded twice).
    """
    label = "har" if source.kind == "har" else "flowfile"
    n_flows = n_bad = 0
    try:
        for item in iter_items(source, on_progress, keep=None if all_flows else might_be_ours):
            if item.skipped:
                n_flows += 1
                summary.flows_read += 1
                continue
            if item.error is None:
                n_flows += 1
            else:
                n_bad += 1
            if item.flow_id in seen:
                summary.already_present += 1
                continue
            if item.error is not None:
                summary.errors.append(item.error)
                if item.flow_id in failed:
                    continue
                failed.add(item.flow_id)
                writer.add({"errors": [{"flow_id": item.flow_id, "stage": IMPORT_STAGE,
                                        "error": item.error, "at": time.time()}]})
                continue
            seen.add(item.flow_id)
            summary.flows_read += 1
            f = item.flow
            if not isinstance(f, http.HTTPFlow):
                continue  # TCP, UDP and DNS flows carry no web traffic
            try:
                rows = extract_flow(f, source=label, redact=redact, all_flows=all_flows)
            except Exception as exc:  # extract_flow promises not to raise; one bad flow must not end the file
                log.exception("extracting %s from %s", f.id, source.path)
                rows = {"errors": [{"flow_id": f.id, "stage": IMPORT_STAGE,
                                    "error": f"{type(exc).__name__}: {exc}", "at": time.time()}]}
            for row in rows.get("flows", ()):
                summary.recognised[row.get("kind") or "other"] += 1
            writer.add(rows, at=_flow_start(f))
            if writer.pending() >= FLUSH_ROWS:
                writer.flush()
    except SourceError as exc:
        summary.errors.append(str(exc))
        summary.damaged_files.append(source.path)
        # One errors row per damaged file (its id is stable: importing the file again adds none).
        damage_id = str(uuid.uuid5(HAR_NAMESPACE, f"{file_sha256(source.path)}:damaged"))
        if damage_id not in failed:
            failed.add(damage_id)
            writer.add({"errors": [{"flow_id": damage_id, "stage": IMPORT_STAGE, "error": str(exc),
                                    "at": time.time()}]})
        if n_flows:
            summary.files[source.kind] += 1
        return n_flows > 0
    summary.files[source.kind] += 1
    return n_flows > 0 or n_bad == 0


def _flow_start(flow: http.HTTPFlow) -> float | None:
    """When the flow's request started (its partition date); None: unknown (the import's date)."""
    return getattr(flow.request, "timestamp_start", None) or getattr(flow, "timestamp_created", None)
