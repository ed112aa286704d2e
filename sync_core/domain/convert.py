"""Value conversion between Dataverse (Web API form) and Spotler property values, and canonical hashing.

Comparisons happen in Spotler's terms: a Dataverse value is converted to the Spotler value it would be
written as, and both sides' values are reduced to a canonical form before they are compared or hashed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from sync_core.domain.mapping import FieldMapping
from sync_core.domain.records import AttrValue, PropValue


class ConversionError(ValueError):
    """A value cannot be converted for its mapped type (the message names the column, never the value)."""


def is_blank(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | dict):
        return not value
    return False


def _parse_date(text: str) -> date:
    text = text.strip()
    if len(text) == 10:
        return date.fromisoformat(text)
    return datetime.fromisoformat(text.replace("Z", "+00:00")).date()


def _parse_datetime(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _iso_utc(value: datetime) -> str:
    """An aware datetime as Spotler's UTC text (the one place a time is turned to UTC)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_spotler(field: FieldMapping, value: AttrValue) -> PropValue:
    """The Spotler value for a Dataverse value (None for blank)."""
    try:
        return _to_spotler(field, value)
    except (TypeError, ValueError, OverflowError):
        # `from None`: the underlying error's text repeats the value, which must not reach a log.
        raise ConversionError(f"column {field.dataverse}: cannot convert to Spotler {field.type}") from None


def _to_spotler(field: FieldMapping, value: AttrValue) -> PropValue:
    kind = field.type
    if kind == "boolean":
        assert field.bit is not None
        return {field.bit: bool(value)}
    if kind == "multichoice":
        assert field.bits is not None
        chosen = set(value) if isinstance(value, list) else set()
        return {bit: option in chosen for option, bit in field.bits.items()}
    if kind == "choice" and field.bits is not None:
        return {bit: option == value for option, bit in field.bits.items()}
    if is_blank(value):
        return None
    if kind == "choice":
        assert field.choices is not None
        if not isinstance(value, int) or value not in field.choices:
            raise ValueError("unknown option")  # pragma: no mutate - to_spotler drops the text (from None)
        return field.choices[value]
    if kind in ("date", "birthdate"):
        return _parse_date(str(value)).isoformat()
    if kind == "datetime":
        return _iso_utc(_parse_datetime(str(value)))
    if kind == "int":
        return _int(value)
    if kind == "money":
        return _money(value)
    return str(value).strip()  # text and e-mail


def _finite(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError("not a number")  # pragma: no mutate - every caller drops the text
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("not a finite number")  # pragma: no mutate - every caller drops the text
    return number


def _int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        return int(value.strip())
    return int(_finite(value))


def _money(value: object) -> float:
    return round(_finite(value), 2)


def to_dataverse(field: FieldMapping, value: PropValue) -> AttrValue:
    """The Dataverse value for a Spotler value (None for blank)."""
    try:
        return _to_dataverse(field, value)
    except (TypeError, ValueError, OverflowError):
        raise ConversionError(
            f"column {field.dataverse} (property {field.spotler}): cannot convert to Dataverse {field.type}"
        ) from None


def _to_dataverse(field: FieldMapping, value: PropValue) -> AttrValue:
    kind = field.type
    bits = value if isinstance(value, dict) else {}
    if kind == "boolean":
        assert field.bit is not None
        return bool(bits.get(field.bit))
    if kind == "multichoice":
        assert field.bits is not None
        return sorted(option for option, bit in field.bits.items() if bits.get(bit))
    if kind == "choice" and field.bits is not None:
        enabled = [option for option, bit in sorted(field.bits.items()) if bits.get(bit)]
        return enabled[0] if enabled else None
    if is_blank(value):
        return None
    if kind == "choice":
        assert field.choices is not None
        wanted = str(value).strip().casefold()
        for option, text in field.choices.items():
            if text.casefold() == wanted:
                return option
        raise ValueError("unknown option text")  # pragma: no mutate - to_dataverse drops the text (from None)
    if kind in ("date", "birthdate"):
        return _parse_date(str(value)).isoformat()
    if kind == "datetime":
        return _iso_utc(_parse_datetime(str(value)))
    if kind == "int":
        return _int(value)
    if kind == "money":
        return _money(value)
    return str(value).strip()


def canonical(field: FieldMapping, spotler_value: PropValue) -> Any:
    """A comparable form of a Spotler-side value: blanks are None, e-mail is case-folded, sets keep mapped bits."""
    if field.is_set:
        mapped = [field.bit] if field.type == "boolean" else sorted((field.bits or {}).values())
        bits = spotler_value if isinstance(spotler_value, dict) else {}
        return [[bit, bool(bits.get(bit))] for bit in mapped if bit is not None]
    if is_blank(spotler_value):
        return None
    if field.type == "email" and isinstance(spotler_value, str):
        return spotler_value.strip().casefold()
    # A value that does not parse for its type is compared as text: canonical() never raises.
    try:
        if field.type in ("date", "birthdate") and isinstance(spotler_value, str):
            return _parse_date(spotler_value).isoformat()
        if field.type == "datetime" and isinstance(spotler_value, str):
            return _iso_utc(_parse_datetime(spotler_value))
        if field.type == "money" and isinstance(spotler_value, int | float | str):
            return _money(spotler_value)
        if field.type == "int" and isinstance(spotler_value, str):
            return _int(spotler_value)
    except (TypeError, ValueError, OverflowError):
        pass
    if isinstance(spotler_value, float) and math.isfinite(spotler_value) and spotler_value.is_integer():
        return int(spotler_value)
    if isinstance(spotler_value, str):
        return spotler_value.strip()
    return spotler_value


def value_hash(key: bytes, value: Any) -> str:
    """Keyed hash of a canonical value (what link state stores instead of the value itself).

    The hashed text is the value's compact JSON (sorted keys, no ASCII escaping), in UTF-8. Links keep these
    hashes between runs: a change of the text or the digest would make every stored base look changed.
    """
    return hmac.digest(key, _compact_json(value).encode(), hashlib.sha256).hex()[:32]


_compact_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


HASHES_KEPT = 8192
"""Hashes of repeated canonical values remembered per key (the memo starts over when it is full)."""
_hashers: dict[bytes, Callable[[Any], str]] = {}


def hasher(key: bytes) -> Callable[[Any], str]:
    """`value_hash` with `key` bound, remembering the hashes of repeated texts and integers.

    Only exact `str` and `int` values are remembered (`True == 1` and `1.0 == 1` hash differently); other values
    are hashed each time. The answers are those of `value_hash`.
    """
    found = _hashers.get(key)
    if found is not None:
        return found
    memo: dict[str | int, str] = {}
    null, true, false = value_hash(key, None), value_hash(key, True), value_hash(key, False)

    def hash_of(value: Any) -> str:
        kind = type(value)
        if kind is str or kind is int:
            known = memo.get(value)
            if known is None:
                if len(memo) >= HASHES_KEPT:
                    memo.clear()
                known = memo[value] = value_hash(key, value)
            return known
        if value is None:
            return null
        if value is True:
            return true
        if value is False:
            return false
        return value_hash(key, value)

    if len(_hashers) >= 16:
        _hashers.clear()
    _hashers[key] = hash_of
    return hash_of
