"""The property tests are reproducible: unless a profile is chosen by hand, examples derive from the test."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings


@pytest.mark.skipif(bool(os.environ.get("HYPOTHESIS_PROFILE")), reason="a profile was chosen by hand")
def test_default_profile_is_deterministic_and_prints_the_reproducing_blob() -> None:
    assert settings.default.derandomize is True
    assert settings.default.print_blob is True
    assert settings.default.max_examples >= 100


def test_thorough_profile_explores_more_examples_with_fresh_randomness() -> None:
    thorough = settings.get_profile("thorough")
    assert thorough.derandomize is False
    assert thorough.max_examples > settings.get_profile("ci").max_examples
