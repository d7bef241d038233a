"""Strict JSON for machines: NaN and infinities become null, since `NaN` and `Infinity` are
not JSON and a script's parser would reject the whole line."""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """``value`` with every non-finite float, at any depth, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def dumps(payload: Any) -> str:
    """One line of strict JSON (non-finite numbers as null)."""
    return json.dumps(finite(payload), allow_nan=False)
