"""Client-side pacing of Spotler calls: a token bucket shared by every caller of one client.

Spotler limits an account to R calls per second. Workers that each call as fast as they can meet that limit
in bursts (a handful of work items finishing together) and are answered 429; every such answer is a wasted
call and a wait of `Retry-After`. Paced at (at most) the account's rate, calls leave evenly spaced and 429s
become rare. The rate is per process: with several instances, give each `R / maximum instance count`
(docs/operations.md has the arithmetic).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    """Up to `rate` acquisitions per second on average, at most `burst` at once after a quiet spell.

    `acquire()` waits until a token is free. Tokens are handed out in the order they were asked for (each
    caller reserves the next free slot), so many concurrent callers are spaced `1 / rate` seconds apart.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate = rate
        self.burst = burst
        self._interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next = clock()  # the theoretical time of the next token when the bucket is empty
        self.waited = 0.0  # seconds callers spent waiting, in total (for figures)

    def reserve(self) -> float:
        """Take the next token; the seconds to wait before using it."""
        now = self._clock()
        # A quiet spell fills the bucket up to `burst` tokens, no more.
        earliest = now - (self.burst - 1) * self._interval
        slot = max(self._next, earliest)
        self._next = slot + self._interval
        return max(0.0, slot - now)

    async def acquire(self) -> None:
        delay = self.reserve()
        if delay > 0:
            self.waited += delay
            await self._sleep(delay)  # type: ignore[misc]
