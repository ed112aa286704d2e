"""WebhookAuthenticator for the three authentication types of a Dataverse webhook registration."""

from __future__ import annotations

import pytest

from sync_core.dataverse.auth import WebhookAuthenticator

SECRET = "s3cr3t-function-key"


def test_webhook_key_accepts_the_code_query_parameter() -> None:
    auth = WebhookAuthenticator("webhook_key", SECRET)

    assert auth.verify({"code": SECRET}, {}) is True
    assert auth.name == "code"


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ({"code": "wrong"}, {}),
        ({}, {}),
        ({"code": ""}, {}),
        ({"code": SECRET + "x"}, {}),
        ({}, {"code": SECRET}),  # a header named code is not the webhook key
        ({"key": SECRET}, {}),
    ],
)
def test_webhook_key_rejects_wrong_or_missing_codes(query: dict[str, str], headers: dict[str, str]) -> None:
    assert WebhookAuthenticator("webhook_key", SECRET).verify(query, headers) is False


def test_webhook_key_ignores_a_custom_name() -> None:
    auth = WebhookAuthenticator("webhook_key", SECRET, name="other")
    assert auth.verify({"code": SECRET}, {}) is True
    assert auth.verify({"other": SECRET}, {}) is False


def test_http_header_compares_the_named_header_case_insensitively() -> None:
    auth = WebhookAuthenticator("http_header", SECRET, name="X-Sync-Key")

    assert auth.verify({}, {"x-sync-key": SECRET}) is True
    assert auth.verify({}, {"X-SYNC-KEY": SECRET}) is True


@pytest.mark.parametrize(
    ("query", "headers"),
    [({}, {"x-sync-key": "wrong"}), ({}, {}), ({"X-Sync-Key": SECRET}, {}), ({}, {"x-other": SECRET})],
)
def test_http_header_rejects_wrong_or_missing_values(query: dict[str, str], headers: dict[str, str]) -> None:
    assert WebhookAuthenticator("http_header", SECRET, name="X-Sync-Key").verify(query, headers) is False


def test_http_query_string_compares_the_named_parameter() -> None:
    auth = WebhookAuthenticator("http_query_string", SECRET, name="token")

    assert auth.verify({"token": SECRET, "other": "1"}, {}) is True
    assert auth.verify({"token": "nope"}, {}) is False
    assert auth.verify({"code": SECRET}, {}) is False
    assert auth.verify({}, {"token": SECRET}) is False


def test_non_ascii_values_are_compared_without_errors() -> None:
    auth = WebhookAuthenticator("http_query_string", "clé-ünïcode", name="k")

    assert auth.verify({"k": "clé-ünïcode"}, {}) is True
    assert auth.verify({"k": "cle-unicode"}, {}) is False


def test_the_secret_never_appears_in_the_repr() -> None:
    auth = WebhookAuthenticator("http_header", SECRET, name="x-key")
    assert SECRET not in repr(auth)


@pytest.mark.parametrize(
    ("mode", "secret", "name"),
    [("bearer", SECRET, None), ("webhook_key", "", None), ("http_header", SECRET, "")],
)
def test_invalid_configuration_is_refused(mode: str, secret: str, name: str | None) -> None:
    with pytest.raises(ValueError, match=r"mode|secret|name"):
        WebhookAuthenticator(mode, secret, name=name)  # type: ignore[arg-type]


def test_during_a_rotation_the_current_and_the_next_secret_are_both_accepted() -> None:
    auth = WebhookAuthenticator("webhook_key", SECRET, next_secret="the-next-key")

    assert auth.verify({"code": SECRET}, {}) is True
    assert auth.verify({"code": "the-next-key"}, {}) is True
    assert auth.verify({"code": "an-old-key"}, {}) is False
    assert auth.verify({}, {}) is False


def test_an_empty_next_secret_accepts_nothing_extra() -> None:
    auth = WebhookAuthenticator("http_header", SECRET, name="x-key", next_secret="")

    assert auth.verify({}, {"x-key": ""}) is False
    assert auth.verify({}, {"x-key": SECRET}) is True


def test_an_unresolved_key_vault_reference_as_next_secret_is_not_a_key() -> None:
    reference = "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/webhook-secret-next/)"
    auth = WebhookAuthenticator("webhook_key", SECRET, next_secret=reference)

    assert auth.verify({"code": reference}, {}) is False
    assert auth.verify({"code": SECRET}, {}) is True
