"""Results as JSON: NamedTuples, mappings, numpy values and paths as plain JSON values.

Typical usage::

    json.dumps(to_jsonable({"run": seed_run, "matrix": np.eye(2), "path": Path("x")}))
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def to_jsonable(value: Any) -> Any:
    """NamedTuples to dicts, numpy to lists/floats, paths to strings, recursively."""
    if hasattr(value, "_asdict"):
        return {key: to_jsonable(item) for key, item in value._asdict().items()}
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
