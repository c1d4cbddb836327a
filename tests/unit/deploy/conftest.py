"""The deployment tests read the compose files with the merge that the container tests run
(tests/containers/compose_files.py), importable here as ``compose_files``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

COMPOSE_FILES_MODULE = Path(__file__).resolve().parents[2] / "containers" / "compose_files.py"

if "compose_files" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("compose_files", COMPOSE_FILES_MODULE)
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["compose_files"] = _module
    _spec.loader.exec_module(_module)
