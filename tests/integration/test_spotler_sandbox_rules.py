# Fixtures are imported by name until tests/conftest.py lists tests.fixtures.spotler in pytest_plugins;
# ruff: noqa: F811 (those imported names are redefined as test parameters)
"""The sandbox's Spotler rules, through the client and through raw signed HTTP where the client cannot go."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from authlib.oauth1.rfc5849.client_auth import ClientAuth

from sync_core.domain.records import SpotlerContact
from sync_core.spotler.client import SpotlerClient
from sync_core.spotler.errors import SpotlerContactOptedOut, SpotlerInvalidData
from sync_core.spotler.signing import OAuth1Signer
from tests.fixtures.spotler import (  # noqa: F401
    SpotlerSandbox,
    spotler_client,
    spotler_sandbox,
    spotler_sandbox_server,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


def signed_request(
    sandbox: SpotlerSandbox,
    method: str,
    path: str,
    *,
    body: Any = None,
    key: str | None = None,
    secret: str | None = None,
    signer: OAuth1Signer | None = None,
) -> httpx.Response:
    url = f"{sandbox.api_url}{path}"
    signer = signer or OAuth1Signer(
        consumer_key=key or sandbox.consumer_key, consumer_secret=secret or sandbox.consumer_secret
    )
    signed = signer.sign(method, url)
    return httpx.request(method, signed.url, headers=signed.headers, json=body, timeout=5)


def person(external_id: str, **properties: Any) -> dict[str, Any]:
    return {"externalId": external_id, "properties": properties}


# ---------------------------------------------------------------------- duplicates, purge, sets


async def test_insert_with_known_email_under_new_id_merges_into_existing_contact(
    spotler_sandbox: SpotlerSandbox, spotler_client: SpotlerClient
) -> None:
    spotler_sandbox.store.seed([person("first", email="jan@example.nl", firstName="Jan")])

    await spotler_client.insert_contact(
        SpotlerContact("second", {"email": "JAN@example.nl", "lastName": "Dijk"}), update=False, purge=False
    )

    assert await spotler_client.get_contact("second") is None
    merged = await spotler_client.get_contact("first")
    assert merged is not None
    assert merged.properties["firstName"] == "Jan"
    assert merged.properties["lastName"] == "Dijk"
    assert [c["externalId"] for c in spotler_sandbox.store.contacts()] == ["first"]


async def test_duplicate_emails_are_kept_apart_in_allow_mode(
    spotler_sandbox: SpotlerSandbox, spotler_client: SpotlerClient
) -> None:
    spotler_sandbox.store.configure(duplicate_email_mode="allow")
    spotler_sandbox.store.seed([person("first", email="jan@example.nl")])

    await spotler_client.insert_contact(
        SpotlerContact("second", {"email": "jan@example.nl"}), update=False, purge=False
    )

    assert len(await spotler_client.search_by_email("jan@example.nl")) == 2


async def test_bulk_duplicate_email_is_reported_ok_and_merged(
    spotler_sandbox: SpotlerSandbox, spotler_client: SpotlerClient
) -> None:
    spotler_sandbox.store.seed([person("first", email="jan@example.nl")])

    results = await spotler_client.insert_contacts(
        [SpotlerContact("second", {"email": "jan@example.nl", "city": "Delft"})], update=False, purge=False
    )

    assert results[0].ok
    assert spotler_sandbox.store.contact("first")["properties"]["city"] == "Delft"  # type: ignore[index]


async def test_purge_clears_every_property_not_sent(
    spotler_sandbox: SpotlerSandbox, spotler_client: SpotlerClient
) -> None:
    await spotler_client.insert_contact(
        SpotlerContact(
            "p", {"email": "p@example.nl", "firstName": "Jan", "interests": {1: True}}, permissions={1: True}
        ),
        update=False,
        purge=False,
    )

    await spotler_client.update_contact(SpotlerContact("p", {"email": "p@example.nl", "city": "Delft"}), purge=True)
    found = await spotler_client.get_contact("p")

    assert found is not None
    assert found.properties == {"email": "p@example.nl", "city": "Delft"}
    assert found.permissions == {}


async def test_sending_some_set_bits_keeps_the_others(
    spotler_sandbox: SpotlerSandbox, spotler_client: SpotlerClient
) -> None:
    await spotler_client.insert_contact(
        SpotlerContact("s", {"email": "s@example.nl", "interests": {1: True, 4: True}}, permissions={1: True, 2: True}),
        update=False,
        purge=False,
    )

    await spotler_client.update_contact(
        SpotlerContact("s", {"interests": {4: False}}, permissions={2: False}), purge=False
    )
    found = await spotler_client.get_contact("s")

    assert found is not None
    assert found.permissions == {1: True, 2: False, 4: False}
    assert found.properties["interests"] == {1: True, 2: False, 4: False}


async def test_null_value_clears_one_property(spotler_sandbox: SpotlerSandbox, spotler_client: SpotlerClient) -> None:
    spotler_sandbox.store.seed([person("n", email="n@example.nl", city="Delft", firstName="Jan")])

    await spotler_client.update_contact(SpotlerContact("n", {"city": None}), purge=False)

    assert spotler_sandbox.store.contact("n")["properties"] == {"email": "n@example.nl", "firstName": "Jan"}  # type: ignore[index]


# ---------------------------------------------------------------------- anonymize, opt-out


async def test_anonymized_contact_keeps_only_its_id_and_disabled_permissions(
    spotler_sandbox: SpotlerSandbox, spotler_client: SpotlerClient
) -> None:
    store = spotler_sandbox.store
    store.set_clock(T0)
    store.seed([{**person("a", email="a@example.nl", firstName="Jan", permissions=[{"bit": 1, "enabled": True}])}])
    store.advance_clock(60)

    await spotler_client.anonymize_contact("a")
    found = await spotler_client.get_contact("a")

    assert found is not None
    assert found.external_id == "a"
    assert found.properties == {}
    assert found.permissions == {1: False, 2: False, 4: False}
    assert found.email is None
    assert found.last_changed == T0 + timedelta(seconds=60)
    page = await spotler_client.get_updates_page(
        from_date=T0 + timedelta(seconds=30), to_date=T0 + timedelta(hours=1), after=0, page_size=10
    )
    assert [c.external_id for c in page.contacts] == ["a"]


async def test_opted_out_contact_accepts_other_writes_but_not_permissions(
    spotler_sandbox: SpotlerSandbox, spotler_client: SpotlerClient
) -> None:
    store = spotler_sandbox.store
    store.seed([person("o", email="o@example.nl", permissions=[{"bit": 1, "enabled": True}])])
    store.profile_edit("o", opt_out=True)

    await spotler_client.update_contact(SpotlerContact("o", {"city": "Delft"}), purge=False)
    await spotler_client.update_contact(SpotlerContact("o", {}, permissions={2: False}), purge=False)
    with pytest.raises(SpotlerContactOptedOut):
        await spotler_client.insert_contact(SpotlerContact("o", {}, permissions={1: True}), update=True, purge=False)
    found = await spotler_client.get_contact("o")

    assert found is not None
    assert found.opted_out
    assert found.channels == {"EMAIL": False}
    assert found.properties["city"] == "Delft"
    assert not any(found.permissions.values())


async def test_bulk_reports_opted_out_contacts_per_item(
    spotler_sandbox: SpotlerSandbox, spotler_client: SpotlerClient
) -> None:
    spotler_sandbox.store.seed([{**person("o", email="o@example.nl"), "optedOut": True}])

    results = await spotler_client.insert_contacts(
        [SpotlerContact("o", {}, permissions={1: True}), SpotlerContact("n", {"email": "n@example.nl"})],
        update=True,
        purge=False,
    )

    assert [(r.external_id, r.code) for r in results] == [("o", "CONTACT_OPTOUT"), ("n", "OK")]


# ---------------------------------------------------------------------- lastChanged and the updates feed


async def test_write_that_changes_nothing_leaves_last_changed_and_feed_alone(
    spotler_sandbox: SpotlerSandbox, spotler_client: SpotlerClient
) -> None:
    store = spotler_sandbox.store
    store.set_clock(T0)
    await spotler_client.insert_contact(
        SpotlerContact("e", {"email": "e@example.nl", "city": "Delft"}), update=False, purge=False
    )
    store.advance_clock(60)

    await spotler_client.update_contact(SpotlerContact("e", {"city": "Delft"}), purge=False)
    unchanged = await spotler_client.get_contact("e")
    later = await spotler_client.get_updates_page(
        from_date=T0 + timedelta(seconds=1), to_date=T0 + timedelta(hours=1), after=0, page_size=10
    )
    store.advance_clock(60)
    await spotler_client.update_contact(SpotlerContact("e", {"city": "Leiden"}), purge=False)
    changed = await spotler_client.get_contact("e")

    assert unchanged is not None
    assert unchanged.last_changed == T0
    assert later.contacts == ()
    assert changed is not None
    assert changed.last_changed == T0 + timedelta(seconds=120)


async def test_feed_window_is_inclusive_from_exclusive_to_and_ordered(
    spotler_sandbox: SpotlerSandbox, spotler_client: SpotlerClient
) -> None:
    store = spotler_sandbox.store
    store.seed(
        [
            {**person("b", email="b@x.nl"), "lastChanged": T0_MS},
            {**person("a", email="a@x.nl"), "lastChanged": T0_MS},
            {**person("c", email="c@x.nl"), "lastChanged": T0_MS - 1},
            {**person("d", email="d@x.nl"), "lastChanged": T0_MS + 60_000},
            {**person("z", email="z@x.nl"), "lastChanged": T0_MS + 30_000},
        ]
    )

    page = await spotler_client.get_updates_page(
        from_date=T0, to_date=T0 + timedelta(seconds=60), after=0, page_size=10
    )

    assert [c.external_id for c in page.contacts] == ["a", "b", "z"]
    assert page.next_after is None


async def test_api_writes_can_be_hidden_from_the_feed_while_profile_edits_show(
    spotler_sandbox: SpotlerSandbox, spotler_client: SpotlerClient
) -> None:
    store = spotler_sandbox.store
    store.configure(api_writes_in_feed=False)
    store.set_clock(T0)
    await spotler_client.insert_contact(SpotlerContact("h", {"email": "h@x.nl"}), update=False, purge=False)
    await spotler_client.insert_contact(SpotlerContact("v", {"email": "v@x.nl"}), update=False, purge=False)
    store.advance_clock(10)
    store.profile_edit("v", permissions={1: True})

    page = await spotler_client.get_updates_page(
        from_date=T0 - timedelta(hours=1), to_date=T0 + timedelta(hours=1), after=0, page_size=10
    )

    assert [c.external_id for c in page.contacts] == ["v"]
    assert page.contacts[0].permissions[1] is True


def test_feed_rejects_missing_dates_and_oversized_pages(spotler_sandbox: SpotlerSandbox) -> None:
    no_from = signed_request(spotler_sandbox, "GET", "/contact/updates/list?toDate=2024-01-01T00%3A00%3A00&pageSize=10")
    too_big = signed_request(
        spotler_sandbox,
        "GET",
        "/contact/updates/list?fromDate=2024-01-01T00%3A00%3A00&toDate=2024-01-02T00%3A00%3A00&pageSize=10001",
    )
    no_size = signed_request(
        spotler_sandbox, "GET", "/contact/updates/list?fromDate=2024-01-01T00%3A00%3A00&toDate=2024-01-02T00%3A00%3A00"
    )

    assert no_from.status_code == 400
    assert no_from.json() == {"errorType": "INVALID_PARAMS", "message": "Invalid fromDate or no fromDate given"}
    assert too_big.status_code == 400
    assert too_big.json()["errorType"] == "INVALID_PARAMS"
    assert no_size.status_code == 400


def test_feed_next_link_is_present_only_while_more_remain(spotler_sandbox: SpotlerSandbox) -> None:
    spotler_sandbox.store.seed([{**person(f"c{i}", email=f"c{i}@x.nl"), "lastChanged": T0_MS + i} for i in range(3)])
    query = "fromDate=2024-05-01T12%3A00%3A00%2B00%3A00&toDate=2024-05-01T13%3A00%3A00%2B00%3A00&pageSize=2"

    first = signed_request(spotler_sandbox, "GET", f"/contact/updates/list?{query}").json()
    last = signed_request(spotler_sandbox, "GET", f"/contact/updates/list?{query}&after=2").json()

    assert first["paging"]["after"] == 2
    assert "after=2" in first["paging"]["next"]
    assert first["paging"]["next"].startswith(spotler_sandbox.api_url + "/contact/updates/list?")
    assert [c["externalId"] for c in last["contacts"]] == ["c2"]
    assert "next" not in last["paging"]
    assert isinstance(first["contacts"][0]["lastChanged"], int)


# ---------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("properties", "error_type"),
    [
        ({"email": "not-an-email"}, "INVALID_PARAMS"),
        ({"gender": "X"}, "INVALID_PROPERTY"),
        ({"birthday": "15-01-1990"}, "INVALID_PROPERTY"),
        ({"birthday": "1990-02-30"}, "INVALID_PROPERTY"),
        ({"lastPurchaseDate": "yesterday"}, "INVALID_PROPERTY"),
        ({"permissions": [{"bit": 8, "enabled": True}]}, "INVALID_PROPERTY"),
        ({"interests": "sport"}, "INVALID_PROPERTY"),
        ({"favouriteColour": "blue"}, "INVALID_PROPERTY"),
    ],
)
def test_invalid_values_are_rejected_with_spotler_error_shape(
    spotler_sandbox: SpotlerSandbox, properties: dict[str, Any], error_type: str
) -> None:
    response = signed_request(
        spotler_sandbox, "POST", "/contact", body={"contact": {"externalId": "v", "properties": properties}}
    )

    assert response.status_code == 400
    assert response.json()["errorType"] == error_type
    assert spotler_sandbox.store.contact("v") is None


def test_valid_typed_values_are_accepted(spotler_sandbox: SpotlerSandbox) -> None:
    properties = {
        "email": "typed@example.nl",
        "gender": "F",
        "birthday": "1990-01-15",
        "lastPurchaseDate": "2024-01-15T10:00:00+01:00",
        "postalCode": "not a dutch postcode",
        "interests": [{"bit": 2, "enabled": True}],
    }
    response = signed_request(
        spotler_sandbox, "POST", "/contact", body={"contact": {"externalId": "t", "properties": properties}}
    )

    assert response.status_code == 204
    stored = spotler_sandbox.store.contact("t")
    assert stored is not None
    assert stored["properties"]["gender"] == "F"


def test_strict_postcode_mode_requires_dutch_format(spotler_sandbox: SpotlerSandbox) -> None:
    spotler_sandbox.store.configure(strict_postcode=True)

    bad = signed_request(
        spotler_sandbox, "POST", "/contact", body={"contact": {"externalId": "pc", "properties": {"postalCode": "ABC"}}}
    )
    good = signed_request(
        spotler_sandbox,
        "POST",
        "/contact",
        body={"contact": {"externalId": "pc", "properties": {"postalCode": "2611 AB"}}},
    )

    assert bad.status_code == 400
    assert good.status_code == 204


def test_update_body_id_must_match_the_path(spotler_sandbox: SpotlerSandbox) -> None:
    spotler_sandbox.store.seed([person("one", email="one@x.nl")])

    response = signed_request(
        spotler_sandbox,
        "PUT",
        "/contact/one",
        body={"purge": False, "contact": {"externalId": "two", "properties": {}}},
    )

    assert response.status_code == 400
    assert response.json()["errorType"] == "INVALID_PARAMS"


def test_bulk_of_more_than_100_contacts_is_refused_by_the_server(spotler_sandbox: SpotlerSandbox) -> None:
    contacts = [person(f"b{i}", email=f"b{i}@x.nl") for i in range(101)]

    response = signed_request(spotler_sandbox, "POST", "/contact/list", body={"update": True, "contacts": contacts})

    assert response.status_code == 400
    assert response.json()["message"] == "Too many contacts provided (max is 100)"


def test_there_is_no_delete_route(spotler_sandbox: SpotlerSandbox) -> None:
    spotler_sandbox.store.seed([person("d", email="d@x.nl")])

    response = signed_request(spotler_sandbox, "DELETE", "/contact/d")

    assert response.status_code == 405
    assert spotler_sandbox.store.contact("d") is not None


# ---------------------------------------------------------------------- authentication


def assert_not_authorized(response: httpx.Response) -> None:
    assert response.status_code == 401
    body = response.json()
    assert body["errorType"] == "NOT_AUTHORIZED"
    assert body["message"]


def test_unknown_consumer_key_is_not_authorized(spotler_sandbox: SpotlerSandbox) -> None:
    assert_not_authorized(signed_request(spotler_sandbox, "GET", "/contact/properties/list", key="unknown-key-1"))


def test_wrong_secret_is_not_authorized(spotler_sandbox: SpotlerSandbox) -> None:
    assert_not_authorized(signed_request(spotler_sandbox, "GET", "/contact/properties/list", secret="wrong-secret"))


def test_tampered_query_breaks_the_signature(spotler_sandbox: SpotlerSandbox) -> None:
    signer = OAuth1Signer(consumer_key=spotler_sandbox.consumer_key, consumer_secret=spotler_sandbox.consumer_secret)
    signed = signer.sign("GET", f"{spotler_sandbox.api_url}/contact/search?MPSearchQuery=email%3Da%40x.nl&pageSize=1")

    response = httpx.get(signed.url.replace("pageSize=1", "pageSize=2"), headers=signed.headers)

    assert_not_authorized(response)


def test_stale_timestamp_is_not_authorized(spotler_sandbox: SpotlerSandbox) -> None:
    stale = OAuth1Signer(
        consumer_key=spotler_sandbox.consumer_key,
        consumer_secret=spotler_sandbox.consumer_secret,
        timestamp_factory=lambda: str(int(time.time()) - 301),
    )

    assert_not_authorized(signed_request(spotler_sandbox, "GET", "/contact/properties/list", signer=stale))


def test_replayed_nonce_is_not_authorized(spotler_sandbox: SpotlerSandbox) -> None:
    signer = OAuth1Signer(consumer_key=spotler_sandbox.consumer_key, consumer_secret=spotler_sandbox.consumer_secret)
    signed = signer.sign("GET", f"{spotler_sandbox.api_url}/contact/properties/list")

    first = httpx.get(signed.url, headers=signed.headers)
    replay = httpx.get(signed.url, headers=signed.headers)

    assert first.status_code == 200
    assert_not_authorized(replay)


def test_unauthorized_calls_are_counted(spotler_sandbox: SpotlerSandbox) -> None:
    signed_request(spotler_sandbox, "GET", "/contact/properties/list", secret="wrong-secret")

    assert spotler_sandbox.store.call_counts() == {"GET /contact/properties/list": 1}


def test_oauth_parameters_in_the_query_with_empty_token_are_accepted(spotler_sandbox: SpotlerSandbox) -> None:
    # Spotler's own WordPress plugin signs into the query string; Guzzle clients send an empty oauth_token.
    signer = OAuth1Signer(
        consumer_key=spotler_sandbox.consumer_key,
        consumer_secret=spotler_sandbox.consumer_secret,
        signature_type="query",
    )
    signed = signer.sign("GET", f"{spotler_sandbox.api_url}/contact/properties/list?oauth_token=")

    response = httpx.get(signed.url, headers=signed.headers)

    assert response.status_code == 200


def test_requests_signed_by_an_independent_oauth_client_are_accepted(spotler_sandbox: SpotlerSandbox) -> None:
    auth = ClientAuth(spotler_sandbox.consumer_key, client_secret=spotler_sandbox.consumer_secret)
    url = f"{spotler_sandbox.api_url}/contact/search?MPSearchQuery=email%3Da%2Bb%40x.nl&pageSize=5"
    uri, headers, _ = auth.sign("GET", url, {}, b"")

    response = httpx.get(uri, headers=headers)

    assert response.status_code == 200
    assert response.json()["contacts"] == []


# ---------------------------------------------------------------------- control API over HTTP


def test_control_api_drives_the_sandbox_over_http(spotler_sandbox: SpotlerSandbox) -> None:
    control = httpx.Client(base_url=f"{spotler_sandbox.url}/_sandbox", timeout=5)

    assert control.post("/clock", json={"now": T0.isoformat()}).json()["now"] == T0_MS
    assert control.post("/contacts", json={"contacts": [person("c1", email="c1@x.nl")]}).status_code == 201
    edited = control.post(
        "/contacts/c1/profile-edit", json={"permissions": {"1": True}, "properties": {"city": "Delft"}}
    )
    assert edited.status_code == 200
    assert control.post("/clock", json={"advanceSeconds": 5}).json()["now"] == T0_MS + 5000
    assert control.patch("/config", json={"updates_shape": "array"}).json()["updates_shape"] == "array"
    assert (
        control.post(
            "/faults", json={"endpoint": "GET /contact/{externalId}", "kind": "error", "status": 503}
        ).status_code
        == 204
    )

    failed = signed_request(spotler_sandbox, "GET", "/contact/c1")
    ok = signed_request(spotler_sandbox, "GET", "/contact/c1")
    contact = control.get("/contacts/c1").json()

    assert failed.status_code == 503
    assert ok.json()["properties"]["city"] == "Delft"
    assert contact["properties"]["permissions"][0] == {"bit": 1, "description": "Nieuwsbrief", "enabled": True}
    assert control.get("/calls").json() == {"GET /contact/{externalId}": 2}
    assert control.delete("/calls").status_code == 204
    assert control.get("/calls").json() == {}
    assert control.put("/rate-limit", json={"requestsPerSecond": None}).status_code == 204
    assert control.post("/contacts/c1/profile-edit", json={"optOut": True}).json()["channels"] == [
        {"name": "EMAIL", "value": False}
    ]
    assert control.post("/reset").status_code == 200
    assert control.get("/contacts").json() == []
    assert control.get("/contacts/c1").status_code == 404
    control.close()


async def test_profile_edit_shows_up_in_the_feed(
    spotler_sandbox: SpotlerSandbox, spotler_client: SpotlerClient
) -> None:
    store = spotler_sandbox.store
    store.set_clock(T0)
    store.seed([person("pe", email="pe@x.nl", permissions=[{"bit": 1, "enabled": True}])])
    store.advance_clock(3600)
    store.profile_edit("pe", opt_out=True)

    page = await spotler_client.get_updates_page(
        from_date=T0 + timedelta(minutes=30), to_date=T0 + timedelta(hours=2), after=0, page_size=10
    )

    assert len(page.contacts) == 1
    assert page.contacts[0].opted_out
    assert page.contacts[0].permissions == {1: False, 2: False, 4: False}


async def test_search_pages_through_matches(spotler_sandbox: SpotlerSandbox) -> None:
    spotler_sandbox.store.configure(duplicate_email_mode="allow")
    spotler_sandbox.store.seed([person(f"s{i}", email="same@x.nl") for i in range(3)])

    first = signed_request(
        spotler_sandbox, "GET", "/contact/search?MPSearchQuery=email%3DSAME%40x.nl&pageSize=2"
    ).json()

    assert [c["externalId"] for c in first["contacts"]] == ["s0", "s1"]
    assert first["paging"]["after"] == 2
    assert "next" in first["paging"]


def test_invalid_email_error_type_is_configurable(spotler_sandbox: SpotlerSandbox) -> None:
    spotler_sandbox.store.configure(invalid_email_error_type="INVALID_PROPERTY")

    response = signed_request(
        spotler_sandbox, "POST", "/contact", body={"contact": {"externalId": "x", "properties": {"email": "nope"}}}
    )

    assert response.json() == {"errorType": "INVALID_PROPERTY", "message": "Email is invalid"}


async def test_spotler_invalid_data_error_carries_the_remote_message(
    spotler_sandbox: SpotlerSandbox, spotler_client: SpotlerClient
) -> None:
    with pytest.raises(SpotlerInvalidData) as caught:
        await spotler_client.insert_contact(SpotlerContact("x", {"email": "nope"}), update=False, purge=False)

    assert caught.value.message == "Email is invalid"
    assert caught.value.endpoint == "POST /contact"
