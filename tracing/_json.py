"""orjson with the fallbacks trace files need (bytes as hex, odd keys, huge ints)."""

from __future__ import annotations

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError
loads = orjson.loads

_OPTIONS = orjson.OPT_NON_STR_KEYS


def _default(obj: Any) -> Any:
    """Called by orjson for types it cannot encode itself."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).hex()
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    # Anything else (enums with odd values, ids, addresses): its text form beats failing.
    return str(obj)


def _sanitise(obj: Any, depth: int = 0) -> Any:
    """Slow path: rebuild a value orjson refused (ints past 64 bits, cycles, deep nesting)."""
    if depth > 64:
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _sanitise(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_sanitise(v, depth + 1) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, float)):
        return obj
    if isinstance(obj, int):
        return obj if -(2**63) <= obj < 2**64 else str(obj)
    return _default(obj)


def dumps(obj: Any) -> bytes:
    """Serialise to compact JSON bytes; never raises for odd values."""
    try:
        return orjson.dumps(obj, default=_default, option=_OPTIONS)
    except (orjson.JSONEncodeError, TypeError):
        return orjson.dumps(_sanitise(obj), default=_default, option=_OPTIONS)
