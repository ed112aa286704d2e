"""Read the mapping file from a blob of the connector's storage account (MAPPING_BLOB = `container/path`).

Read once when the runtime is built, with the same access as the state tables: the connection string locally
(Azurite), the app's managed identity in Azure (it holds Storage Blob Data Owner on the account).
"""

from __future__ import annotations

from azure.core.exceptions import AzureError

from sync_core.domain.mapping import MappingError
from sync_core.settings import Settings
from sync_core.state.bounds import queue_client_options


def read_mapping_blob(settings: Settings, location: str) -> str:
    """The text of the blob `container/path`; MappingError naming the blob when it cannot be read."""
    # Only a runtime with MAPPING_BLOB set pays for the blob SDK and azure.identity (cold start).
    from azure.identity import DefaultAzureCredential  # noqa: PLC0415
    from azure.storage.blob import BlobClient  # noqa: PLC0415

    container, _, name = location.partition("/")
    conn = settings.resolved_storage_connection_string
    if conn is not None:
        client = BlobClient.from_connection_string(
            conn, container_name=container, blob_name=name, **queue_client_options()
        )
    else:
        credential = DefaultAzureCredential(managed_identity_client_id=settings.storage_client_id)
        account_url = f"https://{settings.storage_account_name}.blob.core.windows.net"
        client = BlobClient(
            account_url, container_name=container, blob_name=name, credential=credential, **queue_client_options()
        )
    try:
        with client:
            return client.download_blob(encoding="utf-8").readall()
    except AzureError as exc:
        raise MappingError(f"MAPPING_BLOB {location}: cannot read the mapping ({type(exc).__name__})") from None
