"""Heavy tests run only when asked for by path: ``make test-heavy`` (``pytest tests/heavy``).

A plain ``pytest`` / ``make test`` run collects ``tests/`` and skips this folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    asked = [Path(arg.split("::")[0]).resolve() for arg in config.args]
    if any(path == HERE or HERE in path.parents for path in asked):
        return None
    return True
