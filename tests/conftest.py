"""Shared test fixtures: Azurite, and the two sandboxes served over real loopback HTTP."""

pytest_plugins = [
    "tests.fixtures.azurite",
    "tests.fixtures.spotler",
    "tests.fixtures.dataverse",
]
