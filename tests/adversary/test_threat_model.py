"""The catalogue against the threat model, stated here on its own terms and not read from the
catalogue: what each mode's hardware adds (AMD's SEV generations, the SEV-SNP whitepaper's
threat table), what the guest's own software checks in every mode, and for each attack what
would stop it, first to last. The expected outcome of a cell follows: *not applicable* where
what is attacked does not exist in the mode, blocked by the first mechanism the mode has, or
*succeeded*. The README's published table is held to the same catalogue.

The catalogue itself is data (each family's ``ATTACKS`` table, ``catalog.ATTACKS``): no
mutation tool changes one expectation into another there, so the test does it, every cell into
every other outcome, and the model must notice each change.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from cvm.errors import UsageError
from cvm.hardware.vm import Mode
from cvm.host.adversary import catalog
from cvm.host.adversary.catalog import ATTACKS, by_name
from cvm.host.adversary.threat import MODES, Attack, Expected, Family, Mechanism, Verdict

M = Mechanism
PLAIN, SEV, SEV_ES, SNP = MODES

# What each generation adds to the one before (plain: nothing).
HARDWARE: dict[Mode, frozenset[Mechanism]] = {
    PLAIN: frozenset(),
    SEV: frozenset({M.MEMORY_ENCRYPTION}),
    SEV_ES: frozenset({M.MEMORY_ENCRYPTION, M.ENCRYPTED_VMSA}),
    SNP: frozenset({
        M.MEMORY_ENCRYPTION, M.ENCRYPTED_VMSA,
        M.RMP, M.PVALIDATE,  # integrity: who owns a page, and whether the guest validated it
        M.RESTRICTED_INJECTION, M.CPUID_PAGE,  # the CPU interface
        M.GUEST_POLICY,  # the PSP enforces the policy for the life of the guest
        M.ATTESTATION, M.VCEK_CHAIN, M.VMPCK,  # the signed report, its chain, its channel
        M.STATE_SEALING, M.ROLLBACK_COUNTER,  # the SVSM's vTPM: state released only attested
    }),
}
# The guest's own software, the same in every mode: Secure Boot, shim, SBAT, the vTPM's sealing
# policy and objects, LUKS2.
SOFTWARE = frozenset({M.SECURE_BOOT, M.DBX, M.SHIM, M.SBAT, M.PCR_POLICY, M.TPM_OBJECT,
                      M.LUKS2_HEADER})

EVERY = frozenset(MODES)
VMSA_MODES = frozenset({SEV_ES, SNP})  # a VMSA exists: the register state is saved in it
PSP_MODES = frozenset({SEV, SEV_ES, SNP})  # the PSP launches the guest under a policy
SNP_ONLY = frozenset({SNP})  # RMP entries, an SNP guest context, reports and guest messages

# name: (family, the modes in which the thing attacked exists, what stops it, first to last)
MODEL: dict[str, tuple[Family, frozenset[Mode], tuple[Mechanism, ...]]] = {
    # memory: encryption keeps a page secret, only the RMP keeps it whole and in place
    "read-page": (Family.MEMORY, EVERY, (M.MEMORY_ENCRYPTION,)),
    "corrupt-page": (Family.MEMORY, EVERY, (M.RMP,)),
    "replay-page": (Family.MEMORY, EVERY, (M.RMP,)),
    "remap-page": (Family.MEMORY, EVERY, (M.RMP,)),
    "alias-pages": (Family.MEMORY, EVERY, (M.RMP,)),
    "substitute-page": (Family.MEMORY, EVERY, (M.PVALIDATE,)),  # the RMP is satisfied
    "unassign-page": (Family.MEMORY, SNP_ONLY, (M.RMP,)),
    "cold-boot-dump": (Family.MEMORY, EVERY, (M.MEMORY_ENCRYPTION,)),
    "foreign-vm-reads": (Family.MEMORY, EVERY, (M.RMP, M.MEMORY_ENCRYPTION)),  # RMP first
    "debug-decrypt": (Family.MEMORY, SNP_ONLY, (M.GUEST_POLICY,)),
    # registers: SEV-ES hides them, only SNP's RMP keeps the VMSA from being written
    "read-registers": (Family.REGISTERS, EVERY, (M.ENCRYPTED_VMSA,)),
    "change-rip": (Family.REGISTERS, EVERY, (M.RMP, M.ENCRYPTED_VMSA)),
    "replay-registers": (Family.REGISTERS, EVERY, (M.RMP,)),  # old ciphertext is accepted
    "read-vmsa": (Family.REGISTERS, VMSA_MODES, (M.ENCRYPTED_VMSA,)),
    # the CPU interface
    "lie-cpuid": (Family.CPU, EVERY, (M.CPUID_PAGE,)),
    "inject-masked-interrupt": (Family.CPU, EVERY, (M.RESTRICTED_INJECTION,)),
    # launch: only an appraised report stops the host's changes before secrets are released
    "tamper-firmware": (Family.LAUNCH, EVERY, (M.ATTESTATION,)),
    "forge-reference-values": (Family.LAUNCH, EVERY, (M.ATTESTATION,)),
    "debug-policy": (Family.LAUNCH, PSP_MODES, (M.ATTESTATION,)),
    "psp-rollback": (Family.LAUNCH, PSP_MODES, (M.ATTESTATION,)),
    # evidence exists only under SEV-SNP
    "replay-evidence": (Family.EVIDENCE, SNP_ONLY, (M.ATTESTATION,)),
    "forge-report": (Family.EVIDENCE, SNP_ONLY, (M.VCEK_CHAIN,)),
    "tamper-guest-message": (Family.EVIDENCE, SNP_ONLY, (M.VMPCK,)),
    "replay-guest-message": (Family.EVIDENCE, SNP_ONLY, (M.VMPCK,)),
    # boot files: the stage that checks what was changed, in every mode
    "unsigned-shim": (Family.BOOT_FILES, EVERY, (M.SECURE_BOOT,)),
    "foreign-signed-grub": (Family.BOOT_FILES, EVERY, (M.SHIM,)),
    "unsigned-kernel": (Family.BOOT_FILES, EVERY, (M.SHIM,)),
    "dbx-revoked-shim": (Family.BOOT_FILES, EVERY, (M.DBX,)),
    "sbat-revoked-grub": (Family.BOOT_FILES, EVERY, (M.SBAT,)),
    "edit-grub-cfg": (Family.BOOT_FILES, EVERY, (M.PCR_POLICY,)),  # measured, not verified
    "cmdline-init-sh": (Family.BOOT_FILES, EVERY, (M.PCR_POLICY,)),
    "exfiltrating-initramfs": (Family.BOOT_FILES, EVERY, (M.PCR_POLICY,)),
    "foreign-esp": (Family.BOOT_FILES, EVERY, (M.SECURE_BOOT,)),  # another owner's db key
    "secure-boot-off": (Family.BOOT_FILES, EVERY, (M.PCR_POLICY,)),  # PCR 7 differs
    # state at rest: LUKS2 has no freshness; the SVSM's vTPM adds sealing and a counter
    "rollback-root": (Family.STATE, EVERY, ()),
    "swap-disk": (Family.STATE, EVERY, (M.TPM_OBJECT,)),
    "corrupt-luks-header": (Family.STATE, EVERY, (M.LUKS2_HEADER,)),
    "edit-token": (Family.STATE, EVERY, (M.PCR_POLICY,)),
    "read-vtpm-state": (Family.STATE, EVERY, (M.STATE_SEALING,)),
    "replace-vtpm-state": (Family.STATE, EVERY, (M.STATE_SEALING, M.TPM_OBJECT)),
    "rollback-vtpm-state": (Family.STATE, EVERY, (M.ROLLBACK_COUNTER,)),
    "move-vtpm-state": (Family.STATE, EVERY, (M.ATTESTATION,)),
}
FAMILY_ORDER = (Family.MEMORY, Family.REGISTERS, Family.CPU, Family.LAUNCH, Family.EVIDENCE,
                Family.BOOT_FILES, Family.STATE)


def model_outcome(name: str, mode: Mode) -> tuple[Verdict, Mechanism | None]:
    """What must come of attack ``name`` in ``mode``, from the model alone."""
    _, exists, stoppers = MODEL[name]
    if mode not in exists:
        return Verdict.NOT_APPLICABLE, None
    for mechanism in stoppers:
        if mechanism in HARDWARE[mode] or mechanism in SOFTWARE:
            return Verdict.BLOCKED, mechanism
    return Verdict.SUCCEEDED, None


def differences(attacks: tuple[Attack, ...]) -> list[str]:
    """Every way ``attacks`` departs from the model: attacks missing or extra, a family, a
    cell's verdict or mechanism, the order of the families."""
    found = [f"{name}: missing" for name in MODEL if name not in {a.name for a in attacks}]
    for attack in attacks:
        if attack.name not in MODEL:
            found.append(f"{attack.name}: not in the threat model")
            continue
        if attack.family is not MODEL[attack.name][0]:
            found.append(f"{attack.name}: family {attack.family.value}")
        for mode in MODES:
            expected = attack.expected(mode)
            if (expected.verdict, expected.mechanism) != model_outcome(attack.name, mode):
                found.append(f"{attack.name} in {mode.value}: {expected}")
    families = [attack.family for attack in attacks]
    if families != sorted(families, key=FAMILY_ORDER.index):
        found.append("the families are out of order")
    return found


def test_the_catalogue_is_the_threat_model() -> None:
    assert differences(ATTACKS) == []
    assert len(ATTACKS) == len(MODEL) == len({attack.name for attack in ATTACKS})


def test_the_model_itself_says_what_the_generations_add() -> None:
    """Each generation keeps what the one before had; the software is every mode's."""
    assert HARDWARE[PLAIN] < HARDWARE[SEV] < HARDWARE[SEV_ES] < HARDWARE[SNP]
    assert not SOFTWARE & HARDWARE[SNP]
    assert SOFTWARE | HARDWARE[SNP] == set(Mechanism)
    assert model_outcome("read-page", PLAIN) == (Verdict.SUCCEEDED, None)
    assert model_outcome("foreign-vm-reads", SEV) == (Verdict.BLOCKED, M.MEMORY_ENCRYPTION)
    assert model_outcome("foreign-vm-reads", SNP) == (Verdict.BLOCKED, M.RMP)
    assert model_outcome("read-vmsa", SEV) == (Verdict.NOT_APPLICABLE, None)


OUTCOMES = [Expected(Verdict.SUCCEEDED), Expected(Verdict.NOT_APPLICABLE),
            *(Expected(Verdict.BLOCKED, mechanism) for mechanism in Mechanism)]


@pytest.mark.parametrize("index", range(len(ATTACKS)), ids=[a.name for a in ATTACKS])
def test_every_changed_expectation_departs_from_the_model(index: int) -> None:
    """Each cell of the attack, changed to each other outcome, is one difference naming it."""
    attack = ATTACKS[index]
    for mode, field in zip(MODES, ("plain", "sev", "sev_es", "sev_snp"), strict=True):
        for outcome in OUTCOMES:
            current = attack.expected(mode)
            if (outcome.verdict, outcome.mechanism) == (current.verdict, current.mechanism):
                continue
            changed = (*ATTACKS[:index], replace(attack, **{field: outcome}),
                       *ATTACKS[index + 1 :])
            assert differences(changed) == [f"{attack.name} in {mode.value}: {outcome}"]


def test_a_changed_family_a_missing_and_an_extra_attack_depart_from_the_model() -> None:
    first = ATTACKS[0]
    assert differences((replace(first, family=Family.CPU), *ATTACKS[1:])) == [
        f"{first.name}: family cpu", "the families are out of order"]
    assert differences(ATTACKS[1:]) == [f"{first.name}: missing"]
    assert differences((*ATTACKS, replace(first, name="new"))) == [
        "new: not in the threat model", "the families are out of order"]
    assert differences((*ATTACKS[-1:], *ATTACKS[:-1])) == ["the families are out of order"]


def test_every_outcome_that_is_not_blocked_says_why() -> None:
    """Where an attack succeeds or does not apply, the report shows the reason."""
    for attack in ATTACKS:
        for mode in MODES:
            expected = attack.expected(mode)
            assert (expected.why != "") == (expected.verdict is not Verdict.BLOCKED), (
                attack.name, mode)


README_WORDS = {
    "**succeeds**": (Verdict.SUCCEEDED, None), "n/a": (Verdict.NOT_APPLICABLE, None),
    "encryption": (Verdict.BLOCKED, M.MEMORY_ENCRYPTION), "RMP": (Verdict.BLOCKED, M.RMP),
    "PVALIDATE": (Verdict.BLOCKED, M.PVALIDATE),
    "encrypted VMSA": (Verdict.BLOCKED, M.ENCRYPTED_VMSA),
    "restricted injection": (Verdict.BLOCKED, M.RESTRICTED_INJECTION),
    "CPUID page": (Verdict.BLOCKED, M.CPUID_PAGE),
    "guest policy": (Verdict.BLOCKED, M.GUEST_POLICY),
    "attestation": (Verdict.BLOCKED, M.ATTESTATION),
    "VMPCK": (Verdict.BLOCKED, M.VMPCK), "VCEK chain": (Verdict.BLOCKED, M.VCEK_CHAIN),
    "Secure Boot (db)": (Verdict.BLOCKED, M.SECURE_BOOT),
    "Secure Boot (dbx)": (Verdict.BLOCKED, M.DBX), "shim": (Verdict.BLOCKED, M.SHIM),
    "SBAT": (Verdict.BLOCKED, M.SBAT), "PCR policy": (Verdict.BLOCKED, M.PCR_POLICY),
    "TPM object": (Verdict.BLOCKED, M.TPM_OBJECT),
    "state sealing": (Verdict.BLOCKED, M.STATE_SEALING),
    "rollback counter": (Verdict.BLOCKED, M.ROLLBACK_COUNTER),
    "LUKS2 header": (Verdict.BLOCKED, M.LUKS2_HEADER),
}


def test_the_readme_publishes_the_catalogue() -> None:
    """The README's table "What the host can do, per mode": every attack, in the catalogue's
    order, with its family and each mode's outcome."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    rows = re.findall(r"^\| `([a-z-]+)` \(([a-z ]+)\) \| [^|]+ \|(.*)\|$", readme, re.MULTILINE)
    assert [name for name, _, _ in rows] == [attack.name for attack in ATTACKS]
    for (name, family, cells), attack in zip(rows, ATTACKS, strict=True):
        assert family == attack.family.value, name
        words = [re.sub(r" \(.*\)$", "", cell.strip()) if "Secure Boot" not in cell
                 else cell.strip() for cell in cells.split("|")]
        published = [README_WORDS[word] for word in words]
        assert published == [(attack.expected(m).verdict, attack.expected(m).mechanism)
                             for m in MODES], name


def test_an_attack_is_found_by_its_name() -> None:
    assert by_name("read-page") is ATTACKS[0]
    assert by_name("move-vtpm-state") is ATTACKS[-1]
    for attack in ATTACKS:
        assert by_name(attack.name) is attack


def test_an_unknown_name_is_refused_with_every_name() -> None:
    names = ", ".join(attack.name for attack in ATTACKS)
    with pytest.raises(UsageError) as refused:
        by_name("read-pages")
    assert str(refused.value) == f"no attack named 'read-pages' (choose from {names})"
    assert names.startswith("read-page, corrupt-page, ") and "move-vtpm-state" in names


def test_the_table_joins_the_families_in_order() -> None:
    from cvm.host.adversary import boot_files, cpu, evidence, launch, memory, registers, state

    assert (*memory.ATTACKS, *registers.ATTACKS, *cpu.ATTACKS,
                               *launch.ATTACKS, *evidence.ATTACKS, *boot_files.ATTACKS,
                               *state.ATTACKS) == catalog.ATTACKS
