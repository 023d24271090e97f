"""Suite-wide settings.

* The slow archive edge cases under tests/heavy run only with ``make test-heavy``
  (FLEETZIP_HEAVY=1), not in ``make test``.
* Every server a test starts must be stopped by that test: a process still running when
  the session ends is stopped here (by its PID) and reported as an error.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import psutil
import pytest

collect_ignore = [] if os.environ.get("FLEETZIP_HEAVY") else ["heavy"]


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    yield
    left = psutil.Process().children(recursive=True)
    for child in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
    psutil.wait_procs(left, timeout=5)
    names = []
    for child in left:
        try:
            names.append(f"{child.pid}: {' '.join(child.cmdline())[:200]}")
        except psutil.Error:
            names.append(str(child.pid))
    if names:
        pytest.fail("processes left running by the tests (now stopped):\n" + "\n".join(names))
