"""A loopback Dataverse: the Web API for contact, lead and account plus a webhook sender like Dataverse's."""

from sandboxes.dataverse.app import DEFAULT_TOKEN, DataverseSandbox, Fault, Limits, create_app
from sandboxes.dataverse.store import APP_USER_ID, HUMAN_USER_ID, DataverseStore, SandboxError
from sandboxes.dataverse.webhooks import Delivery, SenderOptions, WebhookRegistration, WebhookSender

__all__ = [
    "APP_USER_ID",
    "DEFAULT_TOKEN",
    "HUMAN_USER_ID",
    "DataverseSandbox",
    "DataverseStore",
    "Delivery",
    "Fault",
    "Limits",
    "SandboxError",
    "SenderOptions",
    "WebhookRegistration",
    "WebhookSender",
    "create_app",
]
