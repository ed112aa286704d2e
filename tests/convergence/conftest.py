"""The convergence run uses the end-to-end connector (function_app.py on the local host, Azurite, sandboxes)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import EMAIL, SUPPRESSION_KEY, WEBHOOK_KEY, connector_factory
from tests.fixtures.dataverse import DataverseSandboxHandle
from tests.fixtures.spotler import SpotlerSandbox

__all__ = ["connector_factory"]


@pytest.fixture(autouse=True)
def logs_hold_no_email_or_secret(
    caplog: pytest.LogCaptureFixture, spotler_sandbox: SpotlerSandbox, dataverse_sandbox: DataverseSandboxHandle
) -> Iterator[None]:
    """The connector's log lines at INFO and above hold no e-mail address and no secret, over the whole run.

    The end-to-end suite checks DEBUG too; a run of thousands of operations keeps only INFO and above in memory.
    """
    caplog.set_level(logging.INFO)
    for noisy in ("azure", "httpx", "httpcore"):
        caplog.set_level(logging.WARNING, logger=noisy)
    yield
    secrets = (WEBHOOK_KEY, SUPPRESSION_KEY, spotler_sandbox.consumer_secret, dataverse_sandbox.token)
    for record in caplog.get_records("call"):
        remote_side = record.threadName.startswith(("sandbox-", "dataverse-webhooks")) or record.name.startswith(
            ("sandboxes.dataverse", "sandboxes.spotler")
        )
        if remote_side:
            continue
        text = f"{record.name} {record.getMessage()} {record.__dict__}"
        assert not EMAIL.search(text), f"e-mail address in a log line: {record.name}: {record.getMessage()}"
        for secret in secrets:
            assert secret not in text, f"secret in a log line: {record.name}"
