"""Both sandboxes on loopback and the connector's settings for them (the demo and the benchmark)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from sandboxes._server import BackgroundServer
from sandboxes.dataverse import DataverseSandbox
from sandboxes.dataverse import create_app as create_dataverse_app
from sandboxes.spotler.app import create_app as create_spotler_app
from sandboxes.spotler.store import SandboxConfig, SpotlerStore

KEY, SECRET, TOKEN, WEBHOOK_KEY = "sandbox-consumer-key", "sandbox-consumer-secret", "sandbox-token", "sandbox-key"


@dataclass(frozen=True)
class SandboxStack:
    spotler: SpotlerStore
    dataverse: DataverseSandbox
    settings: dict[str, str]
    webhook_key: str = WEBHOOK_KEY


@contextlib.contextmanager
def sandbox_stack(connection_string: str, *, name: str, **overrides: str) -> Iterator[SandboxStack]:
    """Start both sandboxes; `settings` point the connector at them and at fresh tables and a fresh queue."""
    spotler = SpotlerStore(SandboxConfig(consumers={KEY: SECRET}))
    dataverse = DataverseSandbox(token=TOKEN)
    run = uuid.uuid4().hex[:8]
    with (
        BackgroundServer(create_spotler_app(store=spotler)) as sp_srv,
        BackgroundServer(create_dataverse_app(dataverse)) as dv_srv,
    ):
        settings = {
            "AzureWebJobsStorage": connection_string,
            "SYNC_TABLE_PREFIX": f"{name}{run}",
            "SYNC_QUEUE_NAME": f"{name}-{run}",
            "SPOTLER_BASE_URL": sp_srv.url,
            "SPOTLER_CONSUMER_KEY": KEY,
            "SPOTLER_CONSUMER_SECRET": SECRET,
            "DATAVERSE_URL": dv_srv.url,
            "DATAVERSE_AUTH": "static_token",
            "DATAVERSE_STATIC_TOKEN": TOKEN,
            "DATAVERSE_APP_USER_ID": dataverse.app_user_id,
            "WEBHOOK_SECRET": WEBHOOK_KEY,
            "SUPPRESSION_HASH_KEY": f"{name}-suppression-hash-key",
            **overrides,
        }
        yield SandboxStack(spotler, dataverse, settings)
