"""Shared test fixtures: Azurite, and the two sandboxes served over real loopback HTTP.

Hypothesis runs deterministically by default (and in CI): the `ci` profile derives every example from the
test itself, so a failure seen once is seen again on every run, and prints the blob that reproduces it.
`HYPOTHESIS_PROFILE=thorough` explores many more examples with fresh randomness, for runs by hand.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=200, derandomize=True, print_blob=True, deadline=None)
settings.register_profile(
    "thorough",
    max_examples=3000,
    derandomize=False,
    print_blob=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or "ci")

pytest_plugins = [
    "tests.fixtures.azurite",
    "tests.fixtures.spotler",
    "tests.fixtures.dataverse",
]
