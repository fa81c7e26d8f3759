"""File-system durability helpers shared by the writer and the compactor."""

from __future__ import annotations

import errno
import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable (best effort where the OS does not allow it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------- private by default
#
# A capture holds someone's conversations: every file chatwire creates is closed to group and
# other (0600, directories 0700) whatever the umask, as ssh keys and browser profiles are. A mode
# given deliberately (``capture_mode``, ``--mode``) is applied exactly, the umask notwithstanding.

DEFAULT_FILE_MODE = 0o600


def dir_mode(file_mode: int | None) -> int:
    """The directory mode that goes with a file mode: ``x`` wherever ``r`` is (0600 -> 0700)."""
    mode = DEFAULT_FILE_MODE if file_mode is None else file_mode
    return mode | ((mode & 0o444) >> 2)


def make_dirs(path: Path, file_mode: int | None = None) -> None:
    """``mkdir -p`` whose new directories get ``dir_mode(file_mode)`` exactly; existing ones are left as they are."""
    path = Path(path)
    missing: list[Path] = []
    cur = path
    while not cur.exists():
        missing.append(cur)
        if cur.parent == cur:
            break
        cur = cur.parent
    mode = dir_mode(file_mode)
    for d in reversed(missing):
        try:
            os.mkdir(d, mode)
        except FileExistsError:
            continue  # made meanwhile by another writer: theirs
        os.chmod(d, mode)  # the umask may have taken bits a deliberate --mode asked for


def open_new(path: Path, file_mode: int | None = None, *, exclusive: bool = False):
    """Open ``path`` for binary writing, created (or truncated) with ``file_mode`` exactly."""
    mode = DEFAULT_FILE_MODE if file_mode is None else file_mode
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, mode)
    try:
        os.fchmod(fd, mode)
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


def write_file_atomic(path: str | os.PathLike, data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` through a hidden temporary file and a rename: a reader sees the
    old file or the whole new one; the file is ``mode`` (default 0600) whatever the umask."""
    import uuid

    final = Path(path)
    tmp = final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open_new(tmp, mode, exclusive=True) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def partition_dirs(table_dir: Path) -> list[Path]:
    """``table_dir`` and every hive partition directory (``key=value``, at any depth) under it."""
    out = [table_dir]
    for current in out:
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        out.extend(Path(e.path) for e in entries
                   if "=" in e.name and not e.name.startswith((".", "_")) and e.is_dir(follow_symlinks=False))
    return out


def describe_os_error(exc: OSError) -> str:
    """``No space left on device (ENOSPC)``: what a failed write says to the person reading the log."""
    name = errno.errorcode.get(exc.errno or 0)
    text = exc.strerror or str(exc) or type(exc).__name__
    return f"{text} ({name})" if name else text
