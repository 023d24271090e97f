"""One bandwidth budget shared by every download of an agent (``max_bandwidth``).

A token bucket in its "virtual scheduling" form (GCRA): the bucket remembers the time at
which everything granted so far has been paid for (`_paid_until`). A download asking for
*n* bytes moves that time on by ``n / rate`` and sleeps until it is no more than one burst
ahead of now. All downloads move the same clock, so together they get ``rate`` bytes/s,
whatever their number — not ``rate`` each, as a per-download sleep would give.

The clock and the sleep are injectable so tests can drive it without waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class TokenBucket:
    """*rate* bytes/s shared by all callers of `consume`, with *burst* bytes of credit."""

    def __init__(
        self,
        rate: int,
        burst: int,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst_seconds = max(burst, 1) / self.rate
        self._clock = clock
        self._sleep = sleep
        self._paid_until = clock()  # nothing granted yet: one burst of credit

    def reserve(self, n: int) -> float:
        """Book *n* bytes now; the seconds the caller must wait before sending them."""
        now = self._clock()
        self._paid_until = max(self._paid_until, now) + n / self.rate
        return max(0.0, self._paid_until - now - self.burst_seconds)

    async def consume(self, n: int) -> None:
        """Wait until *n* more bytes fit in the shared budget."""
        delay = self.reserve(n)
        if delay > 0:
            await self._sleep(delay)

    def piece_size(self, chunk_size: int) -> int:
        """A read size that keeps pacing smooth: at most a tenth of a second's worth."""
        return max(4096, min(chunk_size, int(self.rate / 10)))
