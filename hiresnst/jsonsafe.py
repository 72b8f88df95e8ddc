"""JSON that strict parsers accept: Python writes a NaN or infinite float as the bare tokens
`NaN`/`Infinity`, which are not JSON. A diverged render's losses are NaN, and its record must
still parse."""

from __future__ import annotations

import math
from typing import Any


def finite(value: Any) -> Any:
    """A copy of `value` (dicts, lists, tuples, scalars) with non-finite floats as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
