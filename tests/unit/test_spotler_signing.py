"""OAuth 1.0a signing checked against an independent implementation (authlib) and fixed vectors."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
from authlib.common.urls import url_decode
from authlib.oauth1.rfc5849.signature import construct_base_string, hmac_sha1_signature
from pydantic import SecretStr

from sync_core.spotler.signing import OAuth1Signer

KEY = "dpf43f3p2l4k3l03"
SECRET = "kd94hf93k423kf44"
NONCE = "kllo9940pd9333jh"
TIMESTAMP = "1191242096"
BASE = "https://restapi.mailplus.nl/integrationservice-1.1.0"

# (method, url, signature computed once and pinned, so a change in either library shows up here)
VECTORS = [
    (
        "GET",
        f"{BASE}/contact/search?MPSearchQuery=email%3Da%2Bb%40x.nl&pageSize=10&after=0",
        "WVAqeDZvZaHWCcwYHIoHVmAlzVY=",
    ),
    (
        "GET",
        f"{BASE}/contact/updates/list?fromDate=2024-01-01T00%3A00%3A00%2B01%3A00"
        "&toDate=2024-01-02T00%3A00%3A00%2B01%3A00&after=0&pageSize=1000",
        "t2SBdlTyXNRPPiAQ8arjxzJAVt8=",
    ),
    ("PUT", f"{BASE}/contact/a%2Fb%20c", "Xq/vQuKweKruPq6s/xj1M+D6JzU="),
]


def fixed_signer(**overrides: object) -> OAuth1Signer:
    options: dict[str, object] = {
        "consumer_key": KEY,
        "consumer_secret": SECRET,
        "nonce_factory": lambda: NONCE,
        "timestamp_factory": lambda: TIMESTAMP,
    }
    options.update(overrides)
    return OAuth1Signer(**options)  # type: ignore[arg-type]


def header_params(header: str) -> dict[str, str]:
    assert header.startswith("OAuth ")
    return {k: unquote(v) for k, v in re.findall(r'(\w+)="([^"]*)"', header)}


def authlib_signature(method: str, url: str) -> str:
    """The expected signature from authlib's own base-string and HMAC-SHA1 functions."""
    oauth_params = [
        ("oauth_nonce", NONCE),
        ("oauth_timestamp", TIMESTAMP),
        ("oauth_version", "1.0"),
        ("oauth_signature_method", "HMAC-SHA1"),
        ("oauth_consumer_key", KEY),
    ]
    query_params = url_decode(urlsplit(url).query) if urlsplit(url).query else []
    base_string = construct_base_string(method, url, oauth_params + list(query_params))
    return str(hmac_sha1_signature(base_string, SECRET, ""))


@pytest.mark.parametrize(("method", "url", "pinned"), VECTORS)
def test_signature_matches_authlib_and_pinned_vector(method: str, url: str, pinned: str) -> None:
    signed = fixed_signer().sign(method, url)

    params = header_params(signed.headers["Authorization"])
    assert params["oauth_signature"] == authlib_signature(method, url)
    assert params["oauth_signature"] == pinned
    assert signed.url == url


def test_header_carries_two_legged_hmac_sha1_parameters_only() -> None:
    params = header_params(fixed_signer().sign("GET", VECTORS[0][1]).headers["Authorization"])

    assert params["oauth_consumer_key"] == KEY
    assert params["oauth_signature_method"] == "HMAC-SHA1"
    assert params["oauth_version"] == "1.0"
    assert params["oauth_nonce"] == NONCE
    assert params["oauth_timestamp"] == TIMESTAMP
    assert "oauth_token" not in params
    assert "oauth_body_hash" not in params  # the JSON body is not signed


def test_query_parameters_change_the_signature() -> None:
    signer = fixed_signer()
    plain = header_params(signer.sign("GET", f"{BASE}/contact/search").headers["Authorization"])
    with_query = header_params(signer.sign("GET", VECTORS[0][1]).headers["Authorization"])

    assert plain["oauth_signature"] != with_query["oauth_signature"]


def test_query_signature_type_moves_parameters_into_the_url() -> None:
    signed = fixed_signer(signature_type="query").sign("GET", VECTORS[0][1])

    query = dict(parse_qsl(urlsplit(signed.url).query))
    assert "Authorization" not in signed.headers
    assert query["oauth_signature"] == "WVAqeDZvZaHWCcwYHIoHVmAlzVY="
    assert query["MPSearchQuery"] == "email=a+b@x.nl"


def test_every_signature_gets_a_fresh_nonce_by_default() -> None:
    signer = OAuth1Signer(consumer_key=KEY, consumer_secret=SecretStr(SECRET))
    first = header_params(signer.sign("GET", f"{BASE}/contact/x").headers["Authorization"])
    second = header_params(signer.sign("GET", f"{BASE}/contact/x").headers["Authorization"])

    assert first["oauth_nonce"] != second["oauth_nonce"]
    assert first["oauth_signature"] != second["oauth_signature"]


def test_secret_str_and_plain_secret_sign_identically() -> None:
    plain = fixed_signer().sign("GET", VECTORS[0][1]).headers
    wrapped = fixed_signer(consumer_secret=SecretStr(SECRET)).sign("GET", VECTORS[0][1]).headers

    assert plain == wrapped


def test_signer_repr_hides_credentials() -> None:
    text = repr(fixed_signer())

    assert KEY not in text
    assert SECRET not in text


@pytest.mark.parametrize("field", ["consumer_key", "consumer_secret"])
def test_empty_credentials_are_rejected(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        fixed_signer(**{field: ""})
