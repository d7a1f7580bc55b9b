"""JSON from strangers, parsed with limits.

The standard parser accepts nesting until Python's recursion limit (and then raises
RecursionError, which no `except ValueError` catches), integers of thousands of digits,
and NaN or Infinity. Bodies we accept from outside go through `loads_bounded` instead:
every refusal is an `UnsafeJson` (a ValueError) with a stable code for the API's answer.
"""
from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 32
INT64_LIMIT = 2 ** 63


class UnsafeJson(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def _int(text: str) -> int:
    # Length first: int() of a huge digit string is itself slow, or refused by Python.
    if len(text.lstrip("-")) > 19 or not -INT64_LIMIT <= (value := int(text)) < INT64_LIMIT:
        raise UnsafeJson("number_out_of_range", "Numbers must fit in 64 bits.")
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UnsafeJson("number_out_of_range", "Numbers must be finite.")
    return value


def _constant(text: str):
    raise UnsafeJson("invalid_json", f"{text} is not JSON.")


def _depth(value: Any) -> int:
    """Deepest nesting of lists and objects, walked without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def loads_bounded(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse `raw`; raise UnsafeJson when it is not JSON, too deep, or has out-of-range numbers."""
    try:
        value = json.loads(raw, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except UnsafeJson:
        raise
    except RecursionError:
        raise UnsafeJson("json_too_deep", f"JSON nested deeper than {max_depth} levels is refused.") from None
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise UnsafeJson("invalid_json", "The body is not valid JSON.") from None
    if _depth(value) > max_depth:
        raise UnsafeJson("json_too_deep", f"JSON nested deeper than {max_depth} levels is refused.")
    return value
