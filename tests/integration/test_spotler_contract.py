# Fixtures are imported by name until tests/conftest.py lists tests.fixtures.spotler in pytest_plugins;
# ruff: noqa: F811 (those imported names are redefined as test parameters)
"""The Spotler client against the sandbox over real HTTP, and against the real API when credentials are set.

Tests taking `target` run twice: on the sandbox, and (marked `live_spotler`) on the real Spotler API when
SPOTLER_LIVE_BASE_URL, SPOTLER_LIVE_CONSUMER_KEY and SPOTLER_LIVE_CONSUMER_SECRET are set; live runs use
unique externalIds and anonymize what they create. Fault-injection tests use the sandbox only.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from sync_core.domain.errors import (
    AuthError,
    ConflictError,
    InvalidDataError,
    NotFoundError,
    RateLimitedError,
    TransientError,
)
from sync_core.domain.ports import SpotlerGateway
from sync_core.domain.records import SpotlerContact
from sync_core.spotler.client import SpotlerClient
from sync_core.spotler.errors import (
    SpotlerConnectionError,
    SpotlerContactOptedOut,
    SpotlerError,
    SpotlerRateLimited,
    SpotlerTimeout,
    SpotlerTransientError,
)
from tests.fixtures.spotler import (  # noqa: F401
    SpotlerSandbox,
    spotler_client,
    spotler_sandbox,
    spotler_sandbox_server,
)

LIVE_ENV = ("SPOTLER_LIVE_BASE_URL", "SPOTLER_LIVE_CONSUMER_KEY", "SPOTLER_LIVE_CONSUMER_SECRET")


@dataclass
class Target:
    """A Spotler to test against: its client, and the contacts a test created (anonymized afterwards)."""

    kind: str
    settings: dict[str, object]  # SpotlerClient keyword arguments
    client: SpotlerClient
    email_domain: str = "example.com"
    created: list[str] = field(default_factory=list)

    def new_id(self) -> str:
        external_id = f"sync-contract-{uuid.uuid4().hex}"
        self.created.append(external_id)
        return external_id

    def new_email(self) -> str:
        return f"sync-contract+{uuid.uuid4().hex[:12]}@{self.email_domain}"


@pytest.fixture(params=["sandbox", pytest.param("live", marks=pytest.mark.live_spotler)])
async def target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    if request.param == "live":
        missing = [name for name in LIVE_ENV if not os.environ.get(name)]
        if missing:
            pytest.skip(f"live Spotler run needs {', '.join(missing)} in the environment")
        settings: dict[str, object] = {
            "base_url": os.environ["SPOTLER_LIVE_BASE_URL"],
            "consumer_key": os.environ["SPOTLER_LIVE_CONSUMER_KEY"],
            "consumer_secret": os.environ["SPOTLER_LIVE_CONSUMER_SECRET"],
            "path_prefix": os.environ.get("SPOTLER_LIVE_PATH_PREFIX", "/integrationservice-1.1.0"),
            "timeout": 30.0,
            "max_attempts": 3,
            "max_retry_seconds": 30.0,
        }
        domain = os.environ.get("SPOTLER_LIVE_EMAIL_DOMAIN", "example.com")
        chosen = Target("live", settings, SpotlerClient(**settings), domain)  # type: ignore[arg-type]
    else:
        sandbox: SpotlerSandbox = request.getfixturevalue("spotler_sandbox")
        settings = {
            "base_url": sandbox.url,
            "consumer_key": sandbox.consumer_key,
            "consumer_secret": sandbox.consumer_secret,
            "backoff_base": 0.01,
            "timeout": 2.0,
        }
        chosen = Target("sandbox", settings, SpotlerClient(**settings))  # type: ignore[arg-type]
    try:
        yield chosen
    finally:
        for external_id in chosen.created:
            # Some were never created (the test expected a failure) or are already anonymized.
            with contextlib.suppress(SpotlerError):
                await chosen.client.anonymize_contact(external_id)
        await chosen.client.aclose()


def contact(external_id: str, email: str, **properties: object) -> SpotlerContact:
    return SpotlerContact(external_id=external_id, properties={"email": email, **properties})  # type: ignore[dict-item]


# ---------------------------------------------------------------------- every endpoint, both targets


async def test_client_implements_the_gateway_port(target: Target) -> None:
    """Every operation of the port exists on the client, as a coroutine, with the same parameters."""
    operations = [
        name for name in vars(SpotlerGateway) if not name.startswith("_") and callable(getattr(SpotlerGateway, name))
    ]
    assert "search_by_email" in operations
    for name in operations:
        wanted, actual = getattr(SpotlerGateway, name), getattr(target.client, name, None)
        assert actual is not None, f"SpotlerClient has no {name}"
        assert inspect.iscoroutinefunction(actual) == inspect.iscoroutinefunction(wanted), name
        want = [(p.name, p.kind, p.default) for p in inspect.signature(wanted).parameters.values()][1:]
        have = [(p.name, p.kind, p.default) for p in inspect.signature(actual).parameters.values()]
        assert have[: len(want)] == want, name
        assert all(
            p.default is not inspect.Parameter.empty
            for p in inspect.signature(actual).parameters.values()
            if p.name not in {w[0] for w in want}
        ), name


async def test_property_catalogue_lists_email_and_permission_bits(target: Target) -> None:
    properties = {p.name: p for p in await target.client.list_properties()}

    assert properties["email"].type == "email"
    assert properties["permissions"].type == "set"
    assert 1 in properties["permissions"].entries


async def test_inserted_contact_reads_back_with_permissions_and_times(target: Target) -> None:
    external_id, email = target.new_id(), target.new_email()
    before = datetime.now(UTC) - timedelta(minutes=5)

    await target.client.insert_contact(
        SpotlerContact(external_id, {"email": email, "firstName": "Jan"}, permissions={1: True}),
        update=False,
        purge=False,
    )
    found = await target.client.get_contact(external_id)

    assert found is not None
    assert found.external_id == external_id
    assert found.email == email
    assert found.properties["firstName"] == "Jan"
    assert found.permissions[1] is True
    assert found.channels.get("EMAIL") is True
    assert found.last_changed is not None
    assert found.last_changed > before
    assert found.created is not None
    assert found.encrypted_id


async def test_unknown_contact_reads_as_none(target: Target) -> None:
    assert await target.client.get_contact(f"sync-contract-missing-{uuid.uuid4().hex}") is None


async def test_insert_of_existing_contact_without_update_raises_conflict(target: Target) -> None:
    external_id, email = target.new_id(), target.new_email()
    await target.client.insert_contact(contact(external_id, email), update=False, purge=False)

    with pytest.raises(ConflictError) as caught:
        await target.client.insert_contact(contact(external_id, email), update=False, purge=False)

    assert caught.value.code == "CONTACT_ALREADY_EXISTS"


async def test_insert_with_update_upserts_existing_contact(target: Target) -> None:
    external_id, email = target.new_id(), target.new_email()
    await target.client.insert_contact(contact(external_id, email, firstName="Jan"), update=True, purge=False)
    await target.client.insert_contact(contact(external_id, email, lastName="Dijk"), update=True, purge=False)

    found = await target.client.get_contact(external_id)

    assert found is not None
    assert found.properties["firstName"] == "Jan"
    assert found.properties["lastName"] == "Dijk"


async def test_insert_with_invalid_email_raises_invalid_data(target: Target) -> None:
    with pytest.raises(InvalidDataError) as caught:
        await target.client.insert_contact(contact(target.new_id(), "not-an-email"), update=False, purge=False)

    assert caught.value.status == 400


async def test_insert_with_unknown_property_raises_invalid_data(target: Target) -> None:
    unknown = f"noSuchProperty{uuid.uuid4().hex[:6]}"
    with pytest.raises(InvalidDataError):
        await target.client.insert_contact(
            contact(target.new_id(), target.new_email(), **{unknown: "x"}), update=False, purge=False
        )


async def test_update_changes_only_the_sent_properties(target: Target) -> None:
    external_id, email = target.new_id(), target.new_email()
    await target.client.insert_contact(
        contact(external_id, email, firstName="Jan", lastName="Dijk"), update=False, purge=False
    )

    await target.client.update_contact(SpotlerContact(external_id, {"firstName": "Piet"}), purge=False)
    found = await target.client.get_contact(external_id)

    assert found is not None
    assert found.properties["firstName"] == "Piet"
    assert found.properties["lastName"] == "Dijk"


async def test_update_with_purge_leaves_exactly_what_was_sent(target: Target) -> None:
    external_id, email = target.new_id(), target.new_email()
    await target.client.insert_contact(
        SpotlerContact(external_id, {"email": email, "firstName": "Jan", "city": "Delft"}, permissions={1: True}),
        update=False,
        purge=False,
    )
    await target.client.update_contact(
        SpotlerContact(external_id, {"email": email, "lastName": "Dijk"}, permissions={1: True}), purge=True
    )
    found = await target.client.get_contact(external_id)

    assert found is not None
    assert {k: v for k, v in found.properties.items() if k != "permissions"} == {"email": email, "lastName": "Dijk"}
    assert found.permissions.get(1) is True


async def test_update_of_unknown_contact_raises_not_found(target: Target) -> None:
    missing = SpotlerContact(f"sync-contract-missing-{uuid.uuid4().hex}", {"firstName": "X"})

    with pytest.raises(NotFoundError) as caught:
        await target.client.update_contact(missing, purge=False)

    assert caught.value.status == 404


async def test_bulk_insert_reports_a_result_per_contact(target: Target) -> None:
    good, bad = target.new_id(), target.new_id()

    results = await target.client.insert_contacts(
        [contact(good, target.new_email()), contact(bad, "not-an-email")], update=True, purge=False
    )

    by_id = {r.external_id: r for r in results}
    assert by_id[good].ok
    assert not by_id[bad].ok
    assert by_id[bad].code == "PROPERTY_INVALID"
    assert await target.client.get_contact(good) is not None


async def test_bulk_insert_of_more_than_100_contacts_is_refused_before_sending(target: Target) -> None:
    contacts = [contact(f"bulk-{i}", f"bulk{i}@example.com") for i in range(101)]

    with pytest.raises(ValueError, match="at most 100"):
        await target.client.insert_contacts(contacts, update=True, purge=False)


async def test_anonymize_erases_personal_data_but_keeps_the_external_id(target: Target) -> None:
    external_id, email = target.new_id(), target.new_email()
    await target.client.insert_contact(
        SpotlerContact(external_id, {"email": email, "firstName": "Jan"}, permissions={1: True}),
        update=False,
        purge=False,
    )

    await target.client.anonymize_contact(external_id)
    found = await target.client.get_contact(external_id)

    if found is not None:  # the sandbox keeps the record; Spotler's post-state is not documented
        assert found.email is None
        assert "firstName" not in found.properties
        assert not any(found.permissions.values())


async def test_anonymize_of_unknown_contact_raises_not_found(target: Target) -> None:
    with pytest.raises(NotFoundError):
        await target.client.anonymize_contact(f"sync-contract-missing-{uuid.uuid4().hex}")


async def test_search_by_email_matches_case_insensitively_and_encodes_plus_signs(target: Target) -> None:
    external_id = target.new_id()
    email = f"sync.contract+{uuid.uuid4().hex[:8]}@{target.email_domain}"
    await target.client.insert_contact(contact(external_id, email), update=False, purge=False)

    found = await target.client.search_by_email(email.upper())

    assert [c.external_id for c in found] == [external_id]


async def test_search_for_unknown_email_returns_nothing(target: Target) -> None:
    assert await target.client.search_by_email(target.new_email()) == []


async def test_updates_feed_pages_through_every_change(target: Target) -> None:
    start = datetime.now(UTC) - timedelta(seconds=2)
    ids = [target.new_id() for _ in range(7)]
    for external_id in ids:
        await target.client.insert_contact(contact(external_id, target.new_email()), update=False, purge=False)
    end = datetime.now(UTC) + timedelta(minutes=1)

    seen: list[str] = []
    pages = 0
    after: int | None = 0
    while after is not None:
        page = await target.client.get_updates_page(from_date=start, to_date=end, after=after, page_size=2)
        pages += 1
        seen.extend(c.external_id for c in page.contacts)
        after = page.next_after
        assert pages < 1000

    assert pages >= 4
    assert set(ids) <= set(seen)
    assert len(seen) == len(set(seen))


async def test_wrong_secret_raises_auth_error(target: Target) -> None:
    settings = {**target.settings, "consumer_secret": "definitely-not-the-secret"}
    async with SpotlerClient(**settings) as wrong:  # type: ignore[arg-type]
        with pytest.raises(AuthError) as caught:
            await wrong.list_properties()

    assert caught.value.status in (401, 403)


# ---------------------------------------------------------------------- sandbox only: prefixes, shapes, opt-out


async def test_unversioned_path_prefix_is_served(spotler_sandbox: SpotlerSandbox) -> None:
    async with spotler_sandbox.client(path_prefix="/integrationservice") as client:
        await client.insert_contact(contact("p-1", "p1@example.com"), update=False, purge=False)
        assert await client.get_contact("p-1") is not None

    assert spotler_sandbox.store.call_counts() == {"POST /contact": 1, "GET /contact/{externalId}": 1}


async def test_external_ids_with_reserved_characters_are_encoded(spotler_client: SpotlerClient) -> None:
    odd = "a/b c?d=e&f#g+h%i"
    await spotler_client.insert_contact(contact(odd, "odd@example.com"), update=False, purge=False)
    await spotler_client.update_contact(SpotlerContact(odd, {"city": "Delft"}), purge=False)

    found = await spotler_client.get_contact(odd)

    assert found is not None
    assert found.external_id == odd
    assert found.properties["city"] == "Delft"


async def test_bare_array_updates_feed_is_paged_too(spotler_sandbox: SpotlerSandbox) -> None:
    spotler_sandbox.store.configure(updates_shape="array")
    spotler_sandbox.store.seed([{"externalId": f"c{i}", "properties": {"email": f"c{i}@x.nl"}} for i in range(5)])
    start, end = datetime.now(UTC) - timedelta(minutes=1), datetime.now(UTC) + timedelta(minutes=1)

    async with spotler_sandbox.client() as client:
        seen, after, pages = [], 0, 0
        while after is not None:
            page = await client.get_updates_page(from_date=start, to_date=end, after=after, page_size=2)
            seen += [c.external_id for c in page.contacts]
            after, pages = page.next_after, pages + 1

    assert seen == ["c0", "c1", "c2", "c3", "c4"]
    assert pages == 3


async def test_iso_timestamps_are_read_as_utc(spotler_sandbox: SpotlerSandbox) -> None:
    spotler_sandbox.store.configure(timestamp_format="iso")
    spotler_sandbox.store.set_clock(datetime(2024, 3, 1, 12, 0, tzinfo=UTC))
    spotler_sandbox.store.seed([{"externalId": "iso", "properties": {"email": "iso@x.nl"}}])

    async with spotler_sandbox.client() as client:
        found = await client.get_contact("iso")

    assert found is not None
    assert found.last_changed == datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


async def test_enabling_a_permission_of_an_opted_out_contact_raises_opted_out(
    spotler_sandbox: SpotlerSandbox, spotler_client: SpotlerClient
) -> None:
    spotler_sandbox.store.seed([{"externalId": "out", "properties": {"email": "out@x.nl"}, "optedOut": True}])

    with pytest.raises(SpotlerContactOptedOut) as caught:
        await spotler_client.update_contact(SpotlerContact("out", {}, permissions={1: True}), purge=False)

    assert caught.value.code == "CONTACT_OPTOUT"
    found = await spotler_client.get_contact("out")
    assert found is not None
    assert found.opted_out


async def test_invalid_email_is_invalid_data_whichever_error_type_spotler_uses(
    spotler_sandbox: SpotlerSandbox, spotler_client: SpotlerClient
) -> None:
    spotler_sandbox.store.configure(invalid_email_error_type="INVALID_PROPERTY")

    with pytest.raises(InvalidDataError) as caught:
        await spotler_client.insert_contact(contact("e", "nope"), update=False, purge=False)

    assert caught.value.code == "INVALID_PROPERTY"


# ---------------------------------------------------------------------- sandbox only: retries and faults

GET_ONE = "GET /contact/{externalId}"


async def seeded(sandbox: SpotlerSandbox) -> None:
    sandbox.store.seed([{"externalId": "r1", "properties": {"email": "r1@example.com"}}])


async def test_rate_limited_call_waits_for_retry_after_then_succeeds(spotler_sandbox: SpotlerSandbox) -> None:
    await seeded(spotler_sandbox)
    spotler_sandbox.store.inject_fault(GET_ONE, "rate_limit", times=1, retry_after=1)

    async with spotler_sandbox.client() as client:
        started = time.monotonic()
        found = await client.get_contact("r1")
        elapsed = time.monotonic() - started

    assert found is not None
    assert elapsed >= 1.0
    assert spotler_sandbox.store.call_counts()[GET_ONE] == 2


async def test_fractional_retry_after_is_honoured_on_every_retry(spotler_sandbox: SpotlerSandbox) -> None:
    await seeded(spotler_sandbox)
    spotler_sandbox.store.inject_fault(GET_ONE, "rate_limit", times=2, retry_after=0.2)

    async with spotler_sandbox.client() as client:
        started = time.monotonic()
        await client.get_contact("r1")
        elapsed = time.monotonic() - started

    assert elapsed >= 0.4
    assert spotler_sandbox.store.call_counts()[GET_ONE] == 3


async def test_a_fault_set_through_the_control_api_can_let_calls_pass_first(spotler_sandbox: SpotlerSandbox) -> None:
    await seeded(spotler_sandbox)
    async with httpx.AsyncClient(base_url=spotler_sandbox.url) as control:
        set_fault = await control.post(
            "/_sandbox/faults", json={"endpoint": GET_ONE, "kind": "error", "status": 503, "times": None, "after": 2}
        )
        assert set_fault.status_code == 204
        bad = await control.post("/_sandbox/faults", json={"kind": "error", "after": -1})
        assert bad.status_code == 400

    async with spotler_sandbox.client(max_attempts=1) as client:
        assert await client.get_contact("r1") is not None
        assert await client.get_contact("r1") is not None
        with pytest.raises(SpotlerTransientError):
            await client.get_contact("r1")
    assert spotler_sandbox.store.call_counts()[GET_ONE] == 3


async def test_server_errors_are_retried_with_fresh_signatures(spotler_sandbox: SpotlerSandbox) -> None:
    await seeded(spotler_sandbox)
    spotler_sandbox.store.inject_fault(GET_ONE, "error", times=2, status=503)

    async with spotler_sandbox.client() as client:
        found = await client.get_contact("r1")

    # The sandbox rejects a replayed nonce, so success on try 3 proves each try was signed afresh.
    assert found is not None
    assert spotler_sandbox.store.call_counts()[GET_ONE] == 3


async def test_slow_response_beyond_timeout_is_retried(spotler_sandbox: SpotlerSandbox) -> None:
    await seeded(spotler_sandbox)
    spotler_sandbox.store.inject_fault(GET_ONE, "delay", times=1, delay=1.0)

    async with spotler_sandbox.client(timeout=0.3) as client:
        started = time.monotonic()
        found = await client.get_contact("r1")
        elapsed = time.monotonic() - started

    assert found is not None
    assert 0.3 <= elapsed < 1.0
    assert spotler_sandbox.store.call_counts()[GET_ONE] == 2


async def test_dropped_connection_is_retried(spotler_sandbox: SpotlerSandbox) -> None:
    await seeded(spotler_sandbox)
    spotler_sandbox.store.inject_fault(GET_ONE, "drop", times=1)

    async with spotler_sandbox.client() as client:
        found = await client.get_contact("r1")

    assert found is not None
    assert spotler_sandbox.store.call_counts()[GET_ONE] == 2


async def test_persistent_server_error_ends_in_transient_error_after_max_attempts(
    spotler_sandbox: SpotlerSandbox,
) -> None:
    spotler_sandbox.store.inject_fault("POST /contact", "error", times=None, status=502)

    async with spotler_sandbox.client(max_attempts=3) as client:
        with pytest.raises(SpotlerTransientError) as caught:
            await client.insert_contact(contact("x", "x@example.com"), update=True, purge=False)

    assert isinstance(caught.value, TransientError)
    assert caught.value.status == 502
    assert caught.value.code == "BACKEND_EXCEPTION"
    assert spotler_sandbox.store.call_counts()["POST /contact"] == 3


async def test_persistent_rate_limit_ends_in_rate_limited_error(spotler_sandbox: SpotlerSandbox) -> None:
    spotler_sandbox.store.inject_fault(GET_ONE, "rate_limit", times=None, retry_after=0.05)

    async with spotler_sandbox.client(max_attempts=4) as client:
        with pytest.raises(SpotlerRateLimited) as caught:
            await client.get_contact("r1")

    assert isinstance(caught.value, RateLimitedError)
    assert caught.value.retry_after == pytest.approx(0.05)
    assert spotler_sandbox.store.call_counts()[GET_ONE] == 4


async def test_retry_after_beyond_the_retry_budget_fails_at_once(spotler_sandbox: SpotlerSandbox) -> None:
    spotler_sandbox.store.inject_fault(GET_ONE, "rate_limit", times=None, retry_after=30)

    async with spotler_sandbox.client(max_retry_seconds=1.0) as client:
        started = time.monotonic()
        with pytest.raises(SpotlerRateLimited) as caught:
            await client.get_contact("r1")
        elapsed = time.monotonic() - started

    assert caught.value.retry_after == 30
    assert elapsed < 1.0
    assert spotler_sandbox.store.call_counts()[GET_ONE] == 1


async def test_persistent_timeouts_end_in_timeout_error(spotler_sandbox: SpotlerSandbox) -> None:
    spotler_sandbox.store.inject_fault(GET_ONE, "delay", times=None, delay=0.4)

    async with spotler_sandbox.client(timeout=0.1, max_attempts=2) as client:
        with pytest.raises(SpotlerTimeout) as caught:
            await client.get_contact("r1")

    assert isinstance(caught.value, TransientError)
    assert spotler_sandbox.store.call_counts()[GET_ONE] == 2


async def test_persistent_drops_end_in_connection_error(spotler_sandbox: SpotlerSandbox) -> None:
    spotler_sandbox.store.inject_fault(GET_ONE, "drop", times=None)

    async with spotler_sandbox.client(max_attempts=3) as client:
        with pytest.raises(SpotlerConnectionError):
            await client.get_contact("r1")

    assert spotler_sandbox.store.call_counts()[GET_ONE] == 3


async def test_unreachable_server_ends_in_connection_error(spotler_sandbox: SpotlerSandbox) -> None:
    from sandboxes._server import free_port

    client = SpotlerClient(
        base_url=f"http://127.0.0.1:{free_port()}",
        consumer_key="k",
        consumer_secret="s",
        max_attempts=2,
        backoff_base=0.01,
    )
    async with client:
        with pytest.raises(SpotlerConnectionError):
            await client.list_properties()


async def test_client_errors_are_never_retried(spotler_sandbox: SpotlerSandbox) -> None:
    async with spotler_sandbox.client() as client:
        with pytest.raises(InvalidDataError):
            await client.insert_contact(contact("bad", "not-an-email"), update=False, purge=False)
        with pytest.raises(NotFoundError):
            await client.update_contact(SpotlerContact("missing", {"city": "Delft"}), purge=False)
    async with spotler_sandbox.client(consumer_secret="wrong-secret") as wrong:
        with pytest.raises(AuthError):
            await wrong.get_contact("anything")

    assert spotler_sandbox.store.call_counts() == {
        "POST /contact": 1,
        "PUT /contact/{externalId}": 1,
        GET_ONE: 1,
    }


async def test_request_rate_limit_is_absorbed_by_retries(spotler_sandbox: SpotlerSandbox) -> None:
    await seeded(spotler_sandbox)
    spotler_sandbox.store.set_rate_limit(3)

    async with spotler_sandbox.client(max_attempts=5, max_retry_seconds=5.0) as client:
        started = time.monotonic()
        for _ in range(5):
            assert await client.get_contact("r1") is not None
        elapsed = time.monotonic() - started

    assert spotler_sandbox.store.call_counts()[GET_ONE] > 5  # some calls were answered 429 and retried
    assert elapsed >= 0.5


# ---------------------------------------------------------------------- logging hygiene


async def test_logs_of_failing_calls_hold_no_credentials_or_email_addresses(
    spotler_sandbox: SpotlerSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    email = "jan.de.vries+news@example.nl"
    spotler_sandbox.store.inject_fault("GET /contact/search", "error", times=None, status=500)
    caplog.set_level(logging.DEBUG)

    async with spotler_sandbox.client(max_attempts=3) as client:
        with pytest.raises(InvalidDataError) as invalid:
            await client.insert_contact(
                SpotlerContact("log-1", {"email": email, "gender": "unknown"}), update=False, purge=False
            )
        with pytest.raises(SpotlerTransientError) as failed:
            await client.search_by_email(email)

    # Only this process's client side: the sandbox thread is the remote party.
    records = [r for r in caplog.records if not r.threadName.startswith("sandbox-")]
    text = "\n".join(f"{r.name} {r.getMessage()}" for r in records)
    assert "spotler POST /contact -> 400" in text
    assert "spotler GET /contact/search -> 500" in text
    for secret in (
        spotler_sandbox.consumer_secret,
        spotler_sandbox.consumer_key,
        "Authorization",
        "oauth_signature=",
        email,
        "example.nl",
        "%40example",
    ):
        assert secret not in text, secret
    for error in (invalid.value, failed.value):
        assert email not in str(error)
        assert "example.nl" not in error.message
