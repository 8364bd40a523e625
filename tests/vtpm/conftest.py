"""Fixtures for the vTPM tests: a started TPM with seeded randomness and a settable clock, and
an SEV-SNP platform (machine, PSP, host) that launches guests for the SVSM tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from cvm.amd.kds import ChipFuses
from cvm.crypto.drbg import SeededRandom
from cvm.errors import CvmError
from cvm.formats.ovmf.image import build_image
from cvm.formats.ovmf.sev_metadata import MetadataSection, SectionType
from cvm.guest.tpm.client import TpmClient
from cvm.hardware.machine import Machine
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.host.launch import GuestRequestRelay, SnpLaunch, SnpLaunchConfig, launch_snp
from cvm.host.vmm import Hypervisor
from cvm.vtpm.engine import Tpm


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def seeded_random(seed: bytes) -> Callable[[int], bytes]:
    return SeededRandom(seed)


def _non_volatile(tpm: Tpm) -> bytes | None:
    """The engine's non-volatile state as bytes (None when it holds none, e.g. unloaded)."""
    try:
        return tpm.state.to_bytes()
    except (CvmError, KeyError):
        return None


@pytest.fixture(autouse=True)
def changed_is_complete(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every command of every vTPM test checks that :attr:`Tpm.changed` is complete: a
    command that alters the non-volatile state sets it. The SVSM serialises that state again
    only then (:meth:`cvm.guest.svsm.svsm.Svsm._write_back`), so a command that forgot it would
    lose its change at the next call."""
    execute = Tpm.execute

    def checked(self: Tpm, data: bytes, locality: int = 0) -> bytes:
        before, was = _non_volatile(self), self.changed
        self.changed = False
        try:
            return execute(self, data, locality)
        finally:
            after = _non_volatile(self)
            assert before is None or after is None or after == before or self.changed, (
                f"command {bytes(data[6:10]).hex()} changed the non-volatile state without "
                "setting Tpm.changed")
            self.changed = self.changed or was

    monkeypatch.setattr(Tpm, "execute", checked)
    yield


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tpm(clock: FakeClock) -> Tpm:
    return Tpm(random=seeded_random(b"cvm vtpm tests"), clock=clock)


@pytest.fixture
def client(tpm: Tpm) -> TpmClient:
    tpm_client = TpmClient(tpm.execute, random=seeded_random(b"client"))
    tpm_client.startup()
    return tpm_client


@pytest.fixture
def make_tpm() -> Callable[..., Tpm]:
    """Build another TPM (optionally from a state) with deterministic randomness."""

    def build(state: object = None, seed: bytes = b"other") -> Tpm:
        return Tpm(state=state, random=seeded_random(seed))  # type: ignore[arg-type]

    return build


# ---- an SEV-SNP guest for the SVSM tests -----------------------------------------------------
SVSM_SECTIONS = (
    MetadataSection(0x800000, 0x9000, SectionType.SNP_SEC_MEM),
    MetadataSection(0x80D000, 0x1000, SectionType.SNP_SECRETS),
    MetadataSection(0x80E000, 0x1000, SectionType.CPUID),
    MetadataSection(0x80F000, 0x1000, SectionType.SVSM_CAA),
)


class SnpPlatform:
    """One machine, its PSP and host; ``launch(seed)`` starts a guest with a firmware image."""

    def __init__(self) -> None:
        machine = Machine(8 << 30, random_bytes=seeded_random(b"machine"))
        self.hv = Hypervisor(machine)
        self.psp = SecureProcessor(machine, ChipFuses("Milan", bytes(range(64)), b"\x5a" * 64))
        self.relay = GuestRequestRelay(self.psp)
        self.random = seeded_random(b"svsm")

    def launch(self, seed: bytes = b"cvm svsm firmware", policy: int = 0x30000) -> SnpLaunch:
        image = build_image(0x40000, sections=SVSM_SECTIONS, seed=seed)
        launched = launch_snp(self.hv, self.psp, image, SnpLaunchConfig(policy=policy),
                              self.relay)
        launched.guest.vcpus[0].vmrun()
        return launched


@pytest.fixture
def snp() -> SnpPlatform:
    return SnpPlatform()
