"""The "v1" delta encoding of ChatGPT's conversation stream (late 2024 – now): the patcher.

A delta is ``{"p": JSON pointer, "o": op, "v": value, "c": counter}`` applied to the current
message envelope ``{"message": {...}, "conversation_id": ...}``. Ops: ``add``, ``replace``,
``append`` (string concat, list extend, dict merge), ``truncate`` (cut to length ``v``), ``remove``
and ``patch`` (a list of sub-deltas). It resembles RFC 6902 JSON Patch but ``append``,
``truncate`` and the repeat-previous-p/o rule are not in any JSON-Patch library, hence our own.
"""

from __future__ import annotations

import functools
from typing import Any


class DeltaError(ValueError):
    """A delta that cannot be applied (bad pointer, wrong type)."""


@functools.lru_cache(maxsize=256)
def _pointer(pointer: str) -> tuple[str, ...]:
    return tuple(parse_pointer(pointer))


def parse_pointer(pointer: str) -> list[str]:
    """RFC 6901: ``"/message/content/parts/0"`` -> ``["message", "content", "parts", "0"]``."""
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise DeltaError(f"JSON pointer must start with '/': {pointer!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/")]


def _child(container: Any, key: str, create: bool) -> Any:
    if isinstance(container, dict):
        if key not in container or container[key] is None:
            if not create:
                raise DeltaError(f"no key {key!r}")
            container[key] = {}
        return container[key]
    if isinstance(container, list):
        index = _index(container, key)
        if index >= len(container):
            raise DeltaError(f"index {key} out of range")
        return container[index]
    raise DeltaError(f"cannot descend into {type(container).__name__} with {key!r}")


def _index(container: list, key: str) -> int:
    if key == "-":
        return len(container)
    try:
        index = int(key)
    except ValueError:
        raise DeltaError(f"list index expected, got {key!r}") from None
    return index if index >= 0 else len(container) + index


def _get(container: Any, key: str) -> Any:
    if isinstance(container, dict):
        return container.get(key)
    if isinstance(container, list):
        index = _index(container, key)
        return container[index] if 0 <= index < len(container) else None
    raise DeltaError(f"cannot read {key!r} from {type(container).__name__}")


def _set(container: Any, key: str, value: Any, insert: bool = False) -> None:
    if isinstance(container, dict):
        container[key] = value
    elif isinstance(container, list):
        index = _index(container, key)
        if index == len(container):
            container.append(value)
        elif insert:
            container.insert(index, value)
        elif 0 <= index < len(container):
            container[index] = value
        else:
            raise DeltaError(f"index {key} out of range")
    else:
        raise DeltaError(f"cannot set {key!r} on {type(container).__name__}")


def _appended(target: Any, value: Any) -> Any:
    if target is None:
        return value
    if isinstance(target, str) and isinstance(value, str):
        return target + value
    if isinstance(target, list):
        return target + (value if isinstance(value, list) else [value])
    if isinstance(target, dict) and isinstance(value, dict):
        merged = dict(target)
        merged.update(value)
        return merged
    raise DeltaError(f"cannot append {type(value).__name__} to {type(target).__name__}")


def apply_delta(root: dict, path: str, op: str, value: Any) -> dict:
    """Apply one delta to ``root`` (mutated in place where possible) and return the new root.

    ``patch`` applies each sub-delta in order; every sub-delta names its own ``p`` and ``o``.
    """
    if op == "patch":
        if not isinstance(value, list):
            raise DeltaError("patch value must be a list of deltas")
        for sub in value:
            if not isinstance(sub, dict):
                raise DeltaError("patch item must be an object")
            root = apply_delta(root, sub.get("p", ""), sub.get("o", "replace"), sub.get("v"))
        return root
    keys = _pointer(path)
    if not keys:
        if op in ("add", "replace"):
            return value
        if op == "append":
            return _appended(root, value)
        raise DeltaError(f"op {op!r} not allowed on the root")
    parent = root
    for key in keys[:-1]:
        parent = _child(parent, key, create=op in ("add", "append", "replace"))
    last = keys[-1]
    if op == "add":
        _set(parent, last, value, insert=True)
    elif op == "replace":
        _set(parent, last, value)
    elif op == "append":
        _set(parent, last, _appended(_get(parent, last), value))
    elif op == "truncate":
        target = _get(parent, last)
        if not isinstance(target, (str, list)) or not isinstance(value, int):
            raise DeltaError("truncate needs a string or list and an integer length")
        _set(parent, last, target[:value])
    elif op == "remove":
        if isinstance(parent, dict):
            parent.pop(last, None)
        elif isinstance(parent, list):
            index = _index(parent, last)
            if 0 <= index < len(parent):
                del parent[index]
    else:
        raise DeltaError(f"unknown op {op!r}")
    return root
