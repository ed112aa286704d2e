"""The running connector: function_app.py handlers on loopback, Azurite, and both sandboxes over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import pytest

from sandboxes.functions_host import LocalFunctionsHost
from tests.fixtures.azurite import AzuriteInstance
from tests.fixtures.dataverse import DataverseSandboxHandle
from tests.fixtures.spotler import SpotlerSandbox

WEBHOOK_KEY = "e2e-webhook-key"
SUPPRESSION_KEY = "e2e-suppression-hash-key"
EMAIL = re.compile(r"[\w.+-]+(@|%40)[\w-]+\.[\w.-]+")


@pytest.fixture(autouse=True)
def logs_hold_no_email_or_secret(
    caplog: pytest.LogCaptureFixture, spotler_sandbox: SpotlerSandbox, dataverse_sandbox: DataverseSandboxHandle
) -> Iterator[None]:
    """Every log line the connector writes in an end-to-end test: no e-mail address, no secret."""
    caplog.set_level(logging.DEBUG)
    yield
    secrets = (WEBHOOK_KEY, SUPPRESSION_KEY, spotler_sandbox.consumer_secret, dataverse_sandbox.token)
    for record in caplog.get_records("setup") + caplog.get_records("call"):
        # The remote systems' own side, and calls made to the connector (by Dataverse or by the test).
        remote_side = record.threadName.startswith(("sandbox-", "dataverse-webhooks")) or record.name.startswith(
            ("sandboxes.dataverse", "sandboxes.spotler")
        )
        if remote_side or (record.name == "httpx" and "/api/" in record.getMessage()):
            continue
        text = f"{record.name} {record.getMessage()} {record.__dict__}"
        assert not EMAIL.search(text), f"e-mail address in a log line: {record.name}: {record.getMessage()}"
        for secret in secrets:
            assert secret not in text, f"secret in a log line: {record.name}"


@dataclass
class Connector:
    host: LocalFunctionsHost
    dataverse: DataverseSandboxHandle
    spotler: SpotlerSandbox
    settings: dict[str, str]

    async def deliver(self) -> int:
        """Let the Dataverse sandbox deliver its webhooks, then run the queue trigger until idle."""
        await asyncio.to_thread(self.dataverse.sandbox.drain, timeout=30.0)
        return await self.host.run_queue(idle_rounds=2, poll_seconds=0.05)


ConnectorFactory = Callable[..., AbstractAsyncContextManager[Connector]]


@pytest.fixture
def connector_factory(
    azurite: AzuriteInstance,
    storage_prefix: str,
    dataverse_sandbox: DataverseSandboxHandle,
    spotler_sandbox: SpotlerSandbox,
) -> ConnectorFactory:
    """Start the connector with the e2e settings, overridden (or removed, with None) by keyword."""

    @contextlib.asynccontextmanager
    async def start(**overrides: str | None) -> AsyncIterator[Connector]:
        settings: dict[str, str | None] = {
            "AzureWebJobsStorage": azurite.connection_string,
            "SYNC_TABLE_PREFIX": storage_prefix,
            "SYNC_QUEUE_NAME": f"{storage_prefix}-events",
            "SPOTLER_BASE_URL": spotler_sandbox.url,
            "SPOTLER_CONSUMER_KEY": spotler_sandbox.consumer_key,
            "SPOTLER_CONSUMER_SECRET": spotler_sandbox.consumer_secret,
            "SPOTLER_MAX_ATTEMPTS": "2",
            "DATAVERSE_URL": dataverse_sandbox.url,
            "DATAVERSE_AUTH": "static_token",
            "DATAVERSE_STATIC_TOKEN": dataverse_sandbox.token,
            "DATAVERSE_APP_USER_ID": dataverse_sandbox.app_user_id,
            "WEBHOOK_AUTH_MODE": "webhook_key",
            "WEBHOOK_SECRET": WEBHOOK_KEY,
            "SUPPRESSION_HASH_KEY": SUPPRESSION_KEY,
            "MAX_DELIVERY_ATTEMPTS": "3",
        }
        settings.update(overrides)
        final = {k: v for k, v in settings.items() if v is not None}
        async with LocalFunctionsHost(final) as host:
            host.register_webhooks(dataverse_sandbox.sandbox, key=WEBHOOK_KEY)
            yield Connector(host, dataverse_sandbox, spotler_sandbox, final)

    return start


@pytest.fixture
async def connector(connector_factory: ConnectorFactory) -> AsyncIterator[Connector]:
    async with connector_factory() as running:
        yield running
