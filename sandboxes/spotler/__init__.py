"""A loopback simulator of Spotler Mail+'s contact REST API, with a `/_sandbox/` control API for tests."""

from sandboxes.spotler.app import create_app
from sandboxes.spotler.store import ApiError, Fault, SandboxConfig, SpotlerStore

__all__ = ["ApiError", "Fault", "SandboxConfig", "SpotlerStore", "create_app"]
