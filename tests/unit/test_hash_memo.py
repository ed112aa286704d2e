"""`hasher`: the memoized `value_hash` gives the same answers, remembers only exact texts and integers, and keeps
its memo and its table of keys bounded."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sync_core.domain import convert
from sync_core.domain.convert import hasher, value_hash

VALUES: list[Any] = [None, True, False, 0, 1, -7, 1.0, 2.5, "", "a", "A", "é", " x ", [[1, True]], {"b": 1, "a": [2]}]


@pytest.fixture
def fresh() -> Iterator[dict[bytes, Any]]:
    """An empty table of keys, so every test builds its own hasher."""
    table: dict[bytes, Any] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(convert, "_hashers", table)
        yield table


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every value `hasher` hashes with `value_hash` (rather than taking from its memo)."""
    seen: list[Any] = []
    real = convert.value_hash

    def counting(key: bytes, value: Any) -> str:
        seen.append(value)
        return real(key, value)

    monkeypatch.setattr(convert, "value_hash", counting)
    return seen


@pytest.mark.parametrize("value", VALUES, ids=[f"{type(v).__name__}-{n}" for n, v in enumerate(VALUES)])
def test_hasher_gives_the_answer_of_value_hash(fresh: dict[bytes, Any], value: Any) -> None:
    key = b"memo-key-answers"
    bound = hasher(key)
    assert bound(value) == value_hash(key, value)
    assert bound(value) == value_hash(key, value)  # the remembered answer too


def test_true_and_one_and_one_point_zero_hash_apart_however_they_come(fresh: dict[bytes, Any]) -> None:
    key = b"memo-key-equal-values"
    bound = hasher(key)
    got = [bound(1), bound(True), bound(1.0), bound(0), bound(False), bound(1), bound(True)]
    want = [value_hash(key, v) for v in (1, True, 1.0, 0, False, 1, True)]
    assert got == want
    assert len({got[0], got[1], got[2]}) == 3


def test_hasher_is_built_once_per_key(fresh: dict[bytes, Any]) -> None:
    first = hasher(b"memo-key-one")
    assert hasher(b"memo-key-one") is first
    assert hasher(b"memo-key-two") is not first
    assert fresh[b"memo-key-one"] is first


def test_only_texts_and_integers_are_remembered(fresh: dict[bytes, Any], calls: list[Any]) -> None:
    bound = hasher(b"memo-key-remembered")
    calls.clear()
    for _ in range(2):
        for value in ("a", 7, None, True, False, 2.5, [1]):
            bound(value)
    assert calls == [
        "a",
        7,
        2.5,
        [1],
        2.5,
        [1],
    ]


def test_the_memo_starts_over_when_it_is_full(
    fresh: dict[bytes, Any], calls: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(convert, "HASHES_KEPT", 2)
    bound = hasher(b"memo-key-full")
    calls.clear()
    for value in ("a", "b", "c", "c", "a"):
        bound(value)
    assert calls == ["a", "b", "c", "a"]  # "c" found the memo full and started it over


def test_the_table_of_keys_stays_bounded(fresh: dict[bytes, Any]) -> None:
    for n in range(17):
        hasher(b"memo-key-%d" % n)
    assert len(fresh) == 1
    assert list(fresh) == [b"memo-key-16"]
