"""Fixtures: a loopback fake endpoint and fast retry settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from comptrust_evaluate.testing import FakeEndpoint


@pytest.fixture
def fake() -> Iterator[FakeEndpoint]:
    with FakeEndpoint() as endpoint:
        yield endpoint
