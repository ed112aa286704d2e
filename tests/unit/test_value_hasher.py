"""The remembering hasher gives exactly the answers of `value_hash`, for every kind of canonical value."""

from __future__ import annotations

from typing import Any

import pytest

from sync_core.domain import convert
from sync_core.domain.convert import hasher, value_hash

KEY = b"test-key-0123456789abcdef0123456"
VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    1.0,
    2.5,
    "",
    "1",
    "true",
    "null",
    "Zoë",
    "a\u2028b",
    [[1, True], [2, False]],
    [[1, 1]],
    {"b": 1, "a": [1, 2]},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_hasher_answers_as_value_hash(value: Any) -> None:
    hash_of = hasher(KEY)
    assert hash_of(value) == value_hash(KEY, value)
    assert hash_of(value) == value_hash(KEY, value)  # and again, from the memo


def test_values_that_compare_equal_across_types_keep_their_own_hashes() -> None:
    hash_of = hasher(KEY)
    assert hash_of(1) == value_hash(KEY, 1)
    assert hash_of(True) == value_hash(KEY, True) != hash_of(1)
    assert hash_of(1.0) == value_hash(KEY, 1.0) != hash_of(1)
    assert hash_of("1") != hash_of(1)


def test_hashers_are_per_key_and_the_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    other = b"other-key-0123456789abcdef012345"
    assert hasher(KEY)("x") != hasher(other)("x") == value_hash(other, "x")
    monkeypatch.setattr(convert, "HASHES_KEPT", 4)
    monkeypatch.setattr(convert, "_hashers", {})
    hash_of = hasher(KEY)
    for n in range(50):
        assert hash_of(f"v{n}") == value_hash(KEY, f"v{n}")
    cells = hash_of.__closure__ or ()
    memos = [cell.cell_contents for cell in cells if isinstance(cell.cell_contents, dict)]
    assert len(memos) == 1
    assert 0 < len(memos[0]) <= 4
