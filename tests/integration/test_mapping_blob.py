"""The mapping read from a blob of the connector's storage account (MAPPING_BLOB), on Azurite."""

from __future__ import annotations

import json

import pytest
from azure.storage.blob.aio import BlobServiceClient

from sync_core.domain.mapping import MappingError, default_mapping
from sync_core.services.mapping_check import configured_mapping
from sync_core.services.runtime import load_mapping
from sync_core.settings import load_settings
from tests.fixtures.azurite import AzuriteInstance

BASE = {
    "SPOTLER_CONSUMER_KEY": "k",
    "SPOTLER_CONSUMER_SECRET": "s",
    "DATAVERSE_URL": "https://contoso.crm4.dynamics.com",
    "WEBHOOK_SECRET": "w",
    "SUPPRESSION_HASH_KEY": "0123456789abcdef",
}


async def test_the_mapping_blob_wins_over_the_file_and_the_default(
    azurite: AzuriteInstance, storage_prefix: str
) -> None:
    raw = default_mapping().model_dump(mode="json", by_alias=True, exclude_none=True)
    raw["entities"]["lead"]["enabled"] = False
    container = f"{storage_prefix.lower()}-config"
    async with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        await service.create_container(container)
        await service.get_blob_client(container, "mappings/live.json").upload_blob(json.dumps(raw))
    settings = load_settings(
        {
            **BASE,
            "AzureWebJobsStorage": azurite.connection_string,
            "MAPPING_BLOB": f"{container}/mappings/live.json",
            "MAPPING_FILE": "/nonexistent/mapping.json",
        }
    )

    for mapping in (configured_mapping(settings), load_mapping(settings)):
        assert mapping.for_entity("lead") is None
        assert mapping.for_entity("contact") is not None


def test_a_missing_mapping_blob_is_a_mapping_error_naming_it(azurite: AzuriteInstance) -> None:
    settings = load_settings(
        {**BASE, "AzureWebJobsStorage": azurite.connection_string, "MAPPING_BLOB": "no-such-container/mapping.json"}
    )
    with pytest.raises(MappingError, match=r"no-such-container/mapping\.json"):
        configured_mapping(settings)


def test_an_empty_mapping_blob_setting_means_the_default_mapping(azurite: AzuriteInstance) -> None:
    settings = load_settings({**BASE, "AzureWebJobsStorage": azurite.connection_string, "MAPPING_BLOB": ""})
    assert configured_mapping(settings) == default_mapping()
