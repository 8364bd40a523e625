"""The software PCR bank and measured boot: TPM arithmetic, initial values, log == PCRs."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cvm.errors import StatusError, UsageError
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tcg.no_action import StartupLocalityEvent
from cvm.formats.tcg.replay import replay
from cvm.formats.tcg.uefi_variable_data import UefiVariableData
from cvm.guest.boot.measured_boot import MeasuredBoot
from cvm.guest.boot.pcr_bank import SoftwarePcrBank
from cvm.wire import Guid

GLOBAL = Guid.parse("8be4df61-93ca-11d2-aa0d-00e098032b8c")
# notes/tpm.md 1.3: PCR7(sha256) after extending sha256("abc") once, verified on swtpm.
ABC_PCR7 = "589f9ffed4c477966bfb8d41f37895b08c69047df8f911d6f3b57fbe08faee8d"


def test_extend_matches_the_swtpm_known_answer() -> None:
    bank = SoftwarePcrBank(("sha256",))
    bank.extend(7, {"sha256": hashlib.sha256(b"abc").digest()})
    assert bank.read(7, "sha256").hex() == ABC_PCR7


def test_initial_values() -> None:
    bank = SoftwarePcrBank(("sha1", "sha256"), startup_locality=3)
    assert bank.read(0, "sha256") == bytes(31) + b"\x03"
    assert bank.read(16, "sha1") == bytes(20)
    assert all(bank.read(p, "sha256") == b"\xff" * 32 for p in range(17, 23))
    assert bank.read(23, "sha256") == bytes(32)


def test_locality_rules_for_drtm_pcrs() -> None:
    bank = SoftwarePcrBank(("sha256",))
    with pytest.raises(StatusError) as refused:
        bank.extend(17, {"sha256": bytes(32)})
    assert refused.value.code == 0x907
    bank.locality = 4
    bank.extend(17, {"sha256": bytes(32)})
    assert bank.read(17, "sha256") != b"\xff" * 32


@pytest.mark.parametrize("bad", [
    {"sha384": bytes(48)}, {"sha256": bytes(31)},
])
def test_extend_rejects_unknown_banks_and_wrong_sizes(bad: dict[str, bytes]) -> None:
    bank = SoftwarePcrBank(("sha256",))
    with pytest.raises(UsageError):
        bank.extend(4, bad)
    assert bank.read(4, "sha256") == bytes(32)
    with pytest.raises(UsageError):
        bank.extend(24, {"sha256": bytes(32)})


def test_variable_digest_rules() -> None:
    boot = MeasuredBoot(SoftwarePcrBank(("sha256",)))
    variable = UefiVariableData(GLOBAL, "BootOrder", b"\x01\x00")
    config = boot.measure_variable(7, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, variable)
    order = boot.measure_variable(1, EventType.EV_EFI_VARIABLE_BOOT, variable)
    assert config.digest(0x000B) == hashlib.sha256(variable.to_bytes()).digest()
    assert order.digest(0x000B) == hashlib.sha256(b"\x01\x00").digest()
    assert order.event == variable.to_bytes()
    with pytest.raises(UsageError):
        boot.measure_variable(4, EventType.EV_EFI_ACTION, variable)
    with pytest.raises(UsageError):
        boot.measure_digests(4, EventType.EV_IPL, b"", {"sha1": bytes(20)})


def test_startup_locality_is_logged_and_replayed() -> None:
    pcrs = SoftwarePcrBank(("sha1", "sha256"), startup_locality=3)
    boot = MeasuredBoot(pcrs, startup_locality=3)
    boot.measure(0, EventType.EV_S_CRTM_VERSION, b"\0\0")
    log = EventLog.parse(boot.log.to_bytes())
    assert StartupLocalityEvent.parse(log.events[0].event).locality == 3
    assert log.events[0].event_type == EventType.EV_NO_ACTION
    assert replay(log)["sha256"][0] == pcrs.read(0, "sha256")


events = st.lists(st.tuples(st.integers(0, 16), st.sampled_from(list(EventType)),
                            st.binary(max_size=40)), max_size=20)


@given(events, st.sampled_from([("sha1",), ("sha256",), ("sha1", "sha256", "sha384")]))
def test_the_log_always_replays_to_the_bank(
    measurements: list[tuple[int, EventType, bytes]], banks: tuple[str, ...]
) -> None:
    pcrs = SoftwarePcrBank(banks)
    boot = MeasuredBoot(pcrs)
    for pcr, event_type, data in measurements:
        if event_type == EventType.EV_NO_ACTION:
            boot.log_no_action(pcr, data)
        else:
            boot.measure(pcr, event_type, data)
    log = EventLog.parse(boot.log.to_bytes())
    assert log == boot.log
    for bank, values in replay(log).items():
        for pcr in range(24):
            assert values.get(pcr, pcrs.read(pcr, bank)) == pcrs.read(pcr, bank)
