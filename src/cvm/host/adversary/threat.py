"""The threat table as data: each host attack is a declared object, next to the code that runs it.

An :class:`Attack` names what the host does, its family, and for each mode (``plain``, ``sev``,
``sev-es``, ``sev-snp``) what must come of it: *blocked* — and by which mechanism —,
*succeeded*, or *not applicable* (the thing attacked does not exist in that mode). Its
``perform`` function carries the attack out against a live VM (through a
:class:`~cvm.host.adversary.lab.Lab`) and returns what was *observed*: the verdict and the
mechanism are read off what actually happened (the fault the RMP raised, the status the PSP
returned, the error the boot stage raised), never copied from the expectation.

The expectations are the rows of the SEV-SNP whitepaper's threat table (notes/snp.md §6) for
memory, registers and launch, and the owner's boot-chain and sealing design for the rest.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cvm.errors import UsageError
from cvm.hardware.vm import Mode

if TYPE_CHECKING:
    from cvm.host.adversary.lab import Lab

MODES = (Mode.PLAIN, Mode.SEV, Mode.SEV_ES, Mode.SEV_SNP)


class Verdict(enum.Enum):
    """What came of an attack in one mode."""

    BLOCKED = "blocked"
    SUCCEEDED = "succeeded"
    NOT_APPLICABLE = "not applicable"


class Family(enum.Enum):
    """The attack families, one module each in :mod:`cvm.host.adversary`."""

    MEMORY = "memory"
    REGISTERS = "registers"
    CPU = "cpu"
    LAUNCH = "launch"
    EVIDENCE = "evidence"
    BOOT_FILES = "boot files"
    STATE = "state at rest"


class Mechanism(enum.Enum):
    """What stops an attack. Observed from the event that stopped it."""

    MEMORY_ENCRYPTION = "memory encryption (per-VM key)"
    RMP = "RMP"
    PVALIDATE = "PVALIDATE (page not validated)"
    ENCRYPTED_VMSA = "encrypted VMSA"
    RESTRICTED_INJECTION = "restricted injection"
    CPUID_PAGE = "CPUID page checked by the PSP"
    GUEST_POLICY = "guest policy (PSP)"
    ATTESTATION = "attestation (signed report appraised)"
    VMPCK = "VMPCK (AES-GCM message channel)"
    VCEK_CHAIN = "VCEK chain (AMD root)"
    SECURE_BOOT = "Secure Boot (db)"
    DBX = "Secure Boot (dbx)"
    SHIM = "shim (vendor certificate)"
    SBAT = "SBAT"
    PCR_POLICY = "PCR policy (vTPM)"
    TPM_OBJECT = "vTPM (sealed object bound to its seeds)"
    STATE_SEALING = "vTPM state sealed at rest"
    ROLLBACK_COUNTER = "rollback counter"
    LUKS2_HEADER = "LUKS2 header checksum and digest"


@dataclass(frozen=True)
class Expected:
    """What must come of an attack in one mode; ``mechanism`` is set exactly when blocked."""

    verdict: Verdict
    mechanism: Mechanism | None = None
    why: str = ""

    def __post_init__(self) -> None:
        if (self.verdict is Verdict.BLOCKED) != (self.mechanism is not None):
            raise UsageError("an expectation names a mechanism exactly when it is 'blocked'")

    def __str__(self) -> str:
        if self.mechanism is not None:
            return f"blocked by {self.mechanism.value}"
        return self.verdict.value


@dataclass(frozen=True)
class Observed:
    """What an attack came to, as seen live: verdict, the mechanism that stopped it, details."""

    verdict: Verdict
    detail: str
    mechanism: Mechanism | None = None

    def __str__(self) -> str:
        if self.mechanism is not None:
            return f"blocked by {self.mechanism.value}"
        return self.verdict.value

    def matches(self, expected: Expected) -> bool:
        return self.verdict is expected.verdict and self.mechanism is expected.mechanism


def blocked(mechanism: Mechanism, detail: str) -> Observed:
    return Observed(Verdict.BLOCKED, detail, mechanism)


def succeeded(detail: str) -> Observed:
    return Observed(Verdict.SUCCEEDED, detail)


def not_applicable(detail: str) -> Observed:
    return Observed(Verdict.NOT_APPLICABLE, detail)


OK = Expected(Verdict.SUCCEEDED)
NA = Expected(Verdict.NOT_APPLICABLE)


def ok(why: str) -> Expected:
    """Expected: the attack succeeds, because ``why`` (what the mode lacks)."""
    return Expected(Verdict.SUCCEEDED, why=why)


def na(why: str) -> Expected:
    """Expected: nothing to attack in this mode, because ``why``."""
    return Expected(Verdict.NOT_APPLICABLE, why=why)


def by(mechanism: Mechanism) -> Expected:
    """Expected: blocked by ``mechanism``."""
    return Expected(Verdict.BLOCKED, mechanism)


@dataclass(frozen=True)
class Attack:
    """One host attack: its name, family, what it does, and its expected outcome per mode."""

    name: str
    family: Family
    does: str
    plain: Expected
    sev: Expected
    sev_es: Expected
    sev_snp: Expected
    perform: Callable[[Lab], Observed]

    def expected(self, mode: Mode) -> Expected:
        return (self.plain, self.sev, self.sev_es, self.sev_snp)[MODES.index(mode)]


def declare(
    name: str, family: Family, does: str,
    expected: tuple[Expected, Expected, Expected, Expected], perform: Callable[[Lab], Observed],
) -> Attack:
    """The attack ``name``, carried out by ``perform``, with its expectations per mode (in the
    order plain, sev, sev-es, sev-snp).

    Each family declares its attacks in one table after their code: ``perform`` stays a plain
    function (a decorator would hide it from mutation testing, docs/mutation/adversary.md)."""
    return Attack(name, family, does, *expected, perform=perform)
