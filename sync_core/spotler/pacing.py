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
from collections.abc import Awaitable, Callable


class TokenBucket:
    """Up to `rate` acquisitions per second, at most `burst` at once after a quiet spell.

    `acquire()` waits until a token is free. Callers queue on a lock and each is spaced `1 / rate` seconds after
    the previous one actually left: a caller held up (a busy event loop) delays the ones after it rather than
    letting them catch up in a burst, which a per-second limit would answer with 429.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
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
        self._next = clock()  # when the next token is free (the bucket is empty then)
        self._lock = asyncio.Lock()
        self.waited = 0.0  # seconds callers spent waiting, in total (for figures)

    async def acquire(self) -> None:
        async with self._lock:
            now = self._clock()
            # A quiet spell fills the bucket up to `burst` tokens, no more.
            slot = max(self._next, now - (self.burst - 1) * self._interval)
            if slot > now:
                self.waited += slot - now
                await self._sleep(slot - now)
            left = self._clock()
            self._next = max(slot, left - (self.burst - 1) * self._interval) + self._interval

    def pause(self, seconds: float) -> None:
        """Spotler answered 429: no caller of this bucket sends again for `seconds` (its `Retry-After`), rather
        than each worker finding out with a 429 of its own."""
        self._next = max(self._next, self._clock() + max(0.0, seconds))
