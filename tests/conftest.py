"""Suite-wide settings: the slow archive edge cases under tests/heavy run only with
``make test-heavy`` (FLEETZIP_HEAVY=1), not in ``make test``."""

import os

collect_ignore = [] if os.environ.get("FLEETZIP_HEAVY") else ["heavy"]
