"""Options a use does not read are refused, all named in one line, in the order given."""

from __future__ import annotations

import pytest

from cvm.cli.options import refuse_unused
from cvm.errors import UsageError


def test_nothing_given_is_nothing_refused() -> None:
    refuse_unused("--target qemu", {})
    refuse_unused("--target qemu", {"--seal": False, "--mode": False})


def test_each_option_given_is_named_in_order_and_only_those() -> None:
    with pytest.raises(UsageError) as refused:
        refuse_unused("--target qemu", {"--seal": True, "--mode": False, "--dbx": True})
    assert str(refused.value) == "--seal, --dbx: not for --target qemu"
    with pytest.raises(UsageError) as refused:
        refuse_unused("--backend emulated", {"--dry-run": True})
    assert str(refused.value) == "--dry-run: not for --backend emulated"
    assert refused.value.exit_code == 64
