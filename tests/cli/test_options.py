"""Options a use does not read are refused, all named in one line, in the order given."""

from __future__ import annotations

import pytest

from cvm.cli.main import execute
from cvm.cli.options import check_workers, refuse_unused
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


@pytest.mark.parametrize("count", [1, 2, 64])
def test_a_worker_count_from_1_to_64_is_taken(count: int) -> None:
    assert check_workers(count) == count


@pytest.mark.parametrize("count", [0, -1, 65])
def test_a_worker_count_outside_1_to_64_is_refused(count: int) -> None:
    with pytest.raises(UsageError) as refused:
        check_workers(count)
    assert str(refused.value) == f"--workers: {count} is not between 1 and 64"


@pytest.mark.parametrize("command", [["attack", "matrix"], ["demo"], ["kbs", "serve"]])
def test_every_command_with_workers_refuses_zero_before_it_starts(
        command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert execute([*command, "--workers", "0"]) == 64
    assert capsys.readouterr().err == "cvm: error: --workers: 0 is not between 1 and 64\n"
