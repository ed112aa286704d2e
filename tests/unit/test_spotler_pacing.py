"""The client-side pacing of Spotler calls: a token bucket shared by the workers of one instance."""

from __future__ import annotations

import asyncio
import itertools

import httpx
import pytest

from sync_core.spotler.client import SpotlerClient
from sync_core.spotler.pacing import TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_concurrent_callers_are_spaced_evenly_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(5.0, clock=clock, sleep=clock.sleep)
    left: list[float] = []

    async def call() -> None:
        await bucket.acquire()
        left.append(clock.now)

    await asyncio.gather(*(call() for _ in range(6)))  # six workers ask at the same instant
    assert [t - 100.0 for t in left] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert bucket.waited == pytest.approx(1.0)


async def test_a_caller_held_up_does_not_let_the_next_ones_catch_up() -> None:
    clock = FakeClock()
    bucket = TokenBucket(5.0, clock=clock, sleep=clock.sleep)
    await bucket.acquire()
    clock.now += 0.9  # the loop was busy: this caller comes 0.7 s after its slot
    await bucket.acquire()
    held_up = clock.now
    await bucket.acquire()
    assert clock.now - held_up == pytest.approx(0.2)  # a full interval after it, not at once


async def test_no_window_of_one_second_holds_more_calls_than_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(5.0, clock=clock, sleep=clock.sleep)
    sent: list[float] = []
    for n in range(40):
        clock.now += 0.01 * (n % 3)  # callers arrive unevenly
        await bucket.acquire()
        sent.append(clock.now)
    for first in sent:
        assert sum(1 for t in sent if first <= t < first + 1.0) <= 5


async def test_a_quiet_spell_does_not_save_up_more_than_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, burst=3, clock=clock, sleep=clock.sleep)
    clock.now += 60  # a minute without calls
    start = clock.now
    left = []
    for _ in range(5):
        await bucket.acquire()
        left.append(clock.now - start)
    assert left == pytest.approx([0.0, 0.0, 0.0, 0.5, 1.0])


async def test_a_429_pauses_every_caller_of_the_bucket() -> None:
    clock = FakeClock()
    bucket = TokenBucket(5.0, clock=clock, sleep=clock.sleep)
    await bucket.acquire()
    bucket.pause(2.0)  # one worker was answered 429 with Retry-After: 2
    start = clock.now
    await bucket.acquire()  # another worker's next call waits too
    assert clock.now - start == pytest.approx(2.0)


async def test_the_client_pauses_its_bucket_on_a_429() -> None:
    answers = [httpx.Response(429, headers={"Retry-After": "1"}, json={}), httpx.Response(200, json=[])]
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: answers.pop(0)))
    client = SpotlerClient(
        base_url="http://127.0.0.1:1", consumer_key="k", consumer_secret="s", http=http, calls_per_second=50
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    await client.list_properties()
    await http.aclose()
    assert loop.time() - started >= 0.95  # waited Retry-After, through the bucket as well


def test_rate_and_burst_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0)
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(1.0, burst=0)


async def test_the_client_paces_every_call_of_its_workers() -> None:
    arrivals: list[float] = []
    loop = asyncio.get_running_loop()

    def handler(request: httpx.Request) -> httpx.Response:
        arrivals.append(loop.time())
        return httpx.Response(200, json=[])

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client = SpotlerClient(
        base_url="http://127.0.0.1:1", consumer_key="k", consumer_secret="s", http=http, calls_per_second=20
    )
    await asyncio.gather(*(client.list_properties() for _ in range(6)))
    await http.aclose()
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(arrivals) == 6
    assert sum(gaps) >= 5 * 0.05 - 0.01, gaps  # 1/20 s apart on average, never sooner overall
    assert client.pacer is not None
    assert client.pacer.waited >= 0.2


async def test_an_unpaced_client_sends_at_once() -> None:
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200, json=[])))
    client = SpotlerClient(base_url="http://127.0.0.1:1", consumer_key="k", consumer_secret="s", http=http)
    assert client.pacer is None
    await asyncio.gather(*(client.list_properties() for _ in range(3)))
    await http.aclose()
