"""The configuration-error pause: while the mapping does not fit Spotler or Dataverse, nothing is written.

The live mapping check runs once per runtime (cached, see `MappingCheckCache`). While it finds problems:
* the queue worker puts each event back on the queue as a fresh message, invisible until the next check is
  due, and takes nothing else from it: the event is never lost, never counted as a failed delivery, never
  dead-lettered;
* the 15-minute pull does not run, so its watermark stays where it is;
* the health view reports `configuration_error` with one line per problem.
When the mapping fits again (a fixed property or column is seen at the next check, or the app restarts with a
fixed mapping file), both resume where they stopped.
"""

from __future__ import annotations

import logging
import weakref
from typing import Protocol, runtime_checkable

from sync_core.dataverse.client import DataverseClient
from sync_core.dataverse.metadata import DataverseMetadata
from sync_core.domain.reasons import ReasonCode
from sync_core.services.mapping_check import MappingCheckCache, MappingCheckResult, check_mapping_live
from sync_core.services.runtime import Runtime

log = logging.getLogger("sync_core.config_gate")

# One cache per live runtime (a runtime exists per event loop); entries of runtimes that are gone are dropped.
_caches: dict[int, tuple[weakref.ref[Runtime], MappingCheckCache]] = {}


@runtime_checkable
class DelayedSink(Protocol):
    async def send_later(self, message: str, delay_seconds: int) -> str: ...


def mapping_check_for(runtime: Runtime) -> MappingCheckCache:
    """The runtime's cached live check (one per runtime, made on first use)."""
    cached = _caches.get(id(runtime))
    if cached is not None and cached[0]() is runtime:
        return cached[1]
    dataverse, mapping, spotler = runtime.dataverse, runtime.mapping, runtime.spotler  # not the runtime itself
    source = DataverseMetadata(dataverse) if isinstance(dataverse, DataverseClient) else None

    async def check() -> MappingCheckResult:
        if source is None:
            return MappingCheckResult(checked=False, error="no Dataverse Web API client to read metadata with")
        return await check_mapping_live(mapping, spotler, source)

    cache = MappingCheckCache(check, recheck=float(runtime.settings.mapping_recheck_seconds))
    for key in [key for key, (ref, _) in _caches.items() if ref() is None]:
        del _caches[key]
    _caches[id(runtime)] = (weakref.ref(runtime), cache)
    return cache


async def mapping_health(runtime: Runtime) -> MappingCheckResult:
    """The live mapping check's (cached) result, for the health view and start-up."""
    return await mapping_check_for(runtime).result()


async def hold_event_if_misconfigured(runtime: Runtime, message: str) -> bool:
    """True when the mapping is invalid and `message` was queued again for after the next check.

    The caller then returns normally, so the host deletes the delivered copy: the event lives on in the new
    message, whose dequeue count starts again at 0.
    """
    result = await mapping_health(runtime)
    if not result.problems:
        return False
    queue = runtime.queue
    if not isinstance(queue, DelayedSink):
        raise RuntimeError("the event queue cannot hold a message back")
    delay = int(mapping_check_for(runtime).recheck_seconds)
    await queue.send_later(message, delay)
    log.warning(
        "event held back: the mapping does not fit Spotler or Dataverse",
        extra={"reason": ReasonCode.CONFIGURATION_ERROR.value, "retry_in_seconds": delay},
    )
    return True


async def pull_paused(runtime: Runtime) -> bool:
    """True when the pull must not run because the mapping is invalid."""
    result = await mapping_health(runtime)
    if result.problems:
        log.warning(
            "pull skipped: the mapping does not fit Spotler or Dataverse",
            extra={"reason": ReasonCode.CONFIGURATION_ERROR.value},
        )
        return True
    return False
