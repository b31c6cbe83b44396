from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.access.accounts import Account, local_accounts


@pytest.fixture(scope="module")
def accounts() -> Iterator[list[Account]]:
    """Three extra local accounts: [refused, allowed, read-only]."""
    with local_accounts(3) as made:
        yield made
