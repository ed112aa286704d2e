"""The plain-address fast path of normalize_email decides exactly as email-validator does."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from sync_core.domain.consent import _plain_normalized

ATOM = st.text(alphabet="abcXYZ019_+-", min_size=1, max_size=8)
LABEL = st.text(alphabet="abcDEF019-", min_size=1, max_size=10)
TLD = st.sampled_from(["com", "NL", "de", "test", "local", "localhost", "io", "Arpa", "museum", "c", "x1"])
NOISE = st.text(alphabet='abc.@-_+ é"\\()[]!#~', max_size=6)


@st.composite
def addresses(draw: st.DrawFn) -> str:
    local = ".".join(draw(st.lists(ATOM, min_size=1, max_size=3)))
    if draw(st.integers(0, 9)) == 0:
        local = local * 10  # beyond 64 characters
    domain = ".".join([*draw(st.lists(LABEL, min_size=0, max_size=3)), draw(TLD)])
    address = f"{local}@{domain}"
    if draw(st.booleans()):
        at = draw(st.integers(0, len(address)))
        address = address[:at] + draw(NOISE) + address[at:]
    return address


def reference(address: str) -> str | None:
    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError:
        return None


@settings(max_examples=1500, deadline=None, derandomize=True, database=None)
@given(addresses())
def test_the_fast_path_agrees_with_email_validator_wherever_it_decides(address: str) -> None:
    fast = _plain_normalized(address)
    if fast is not None:
        assert fast == reference(address)


def test_the_fast_path_decides_ordinary_addresses() -> None:
    assert _plain_normalized("Ada.Lovelace@Example.COM") == "Ada.Lovelace@example.com"
    assert _plain_normalized("x@example.test") is None  # special use: left to email-validator, which refuses it
    assert _plain_normalized("a@xn--bcher-kva.de") is None  # IDNA: left to email-validator
