"""Adversary: the vTPM's secrets stay in the SVSM's VMPL0 pages.

A vTPM is manufactured in the SVSM, seals a disk key, saves its state at rest, unseals the key,
and a second VM boots from the state file and unseals it again. Then everything the host can
read — DRAM of every guest frame and VMSA page, the whole range of DRAM it handed out, the
GHCB and message pages, the VMCB save areas and exit records, the state file and the guest
request relay's log — is scanned for any 8-byte run of the seeds, the proofs, the state-file
key (and the PSP-derived key under it), VMPCK0 and the sealed secret. Positive controls prove
the scan finds a planted run. The guest OS at VMPL1 reading an SVSM page takes a #NPF with the
VMPL bit (AMD APM vol. 2 §15.36.7, "VMPL permission" error-code bit 36).
"""

from __future__ import annotations

import hashlib
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from cvm.crypto import tpm_keys
from cvm.formats.snp.key_request import KeyRequest
from cvm.formats.tpm2.constants import TpmAlg, TpmCc, TpmRh, TpmSe
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.tpm2b import read_tpm2b, tpm2b, writer
from cvm.guest.kernel.sev_guest import SevGuest
from cvm.guest.svsm.svsm import STATE_LENGTH_SIZE, Svsm, SvsmLayout
from cvm.guest.tpm.client import Auth, TpmClient
from cvm.guest.tpm.seal import SealPolicy, seal, unseal
from cvm.guest.tpm.svsm_guest import SvsmGuest
from cvm.hardware.fault import PFERR_VMPL, FaultKind, FaultRaised
from cvm.hardware.machine import Machine
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.hardware.vm import VirtualMachine
from cvm.host.vmm import Guest, Hypervisor
from cvm.vtpm import volatile as volatile_module
from cvm.vtpm.sequence import MAX_SEQUENCE_DATA, MAX_SEQUENCES
from cvm.vtpm.state import HIERARCHIES, PersistentState
from cvm.vtpm.state_file import STATE_KEY_FIELDS, MonotonicCounter, ReleasedKeyProvider
from cvm.vtpm.templates import srk_template
from cvm.vtpm.volatile import VolatileState

BUFFER, SCRATCH, PLANT = 0x20000, 0x21000, 0x30000
RUN = 8  # the length of a run of secret bytes that counts as a leak
SELECTION = PcrSelectionList.of("sha256", [7])
DISK_KEY = hashlib.sha256(b"the disk key the owner sealed").digest()


@dataclass
class Booted:
    """One VM with its SVSM and the guest OS's TPM client."""

    guest: Guest
    svsm: Svsm
    os: SvsmGuest
    client: TpmClient


def _boot(snp: Any, counter: MonotonicCounter, stored: bytes | None = None,
          keys: ReleasedKeyProvider | None = None) -> Booted:
    launched = snp.launch()
    vcpu = launched.guest.vcpus[0]
    svsm = Svsm.start(vcpu, launched.secrets_gpa, counter, snp.random, stored, keys=keys)
    svsm.grant(BUFFER, 2)
    guest_os = SvsmGuest(vcpu, svsm, BUFFER, SCRATCH)
    client = TpmClient(guest_os.tpm_execute)
    client.startup()
    client.pcr_extend(7, {TpmAlg.SHA256: hashlib.sha256(b"signed shim").digest()})
    return Booted(launched.guest, svsm, guest_os, client)


def _story(snp: Any, keys: ReleasedKeyProvider | None = None) -> tuple[list[Booted], bytes]:
    """Manufacture, seal the disk key, save the state, unseal; reboot from the file, unseal."""
    counter = MonotonicCounter()
    first = _boot(snp, counter, keys=keys)
    policy = SealPolicy(SELECTION)
    values = first.client.pcr_read(SELECTION)[2]
    blob = seal(first.client, DISK_KEY, policy.digest(values).value)
    stored = first.svsm.seal_state()
    assert unseal(first.client, blob, policy) == DISK_KEY
    first.os.attest(hashlib.sha512(b"nonce").digest())
    second = _boot(snp, counter, stored, keys=keys)
    assert unseal(second.client, blob, policy) == DISK_KEY
    return [first, second], stored


def _state_secrets(svsm: Svsm) -> dict[str, bytes]:
    """Seeds and proofs as the SVSM's pages hold them (read by the SVSM itself, at VMPL0)."""
    layout = svsm.layout
    pages = svsm.at_vmpl0(lambda: svsm.vcpu.read(layout.state_gpa,
                                                      layout.state_pages * PAGE_SIZE))
    size = int.from_bytes(pages[:STATE_LENGTH_SIZE], "little")
    state = PersistentState.from_bytes(pages[STATE_LENGTH_SIZE:STATE_LENGTH_SIZE + size])
    rest = pages[STATE_LENGTH_SIZE + size:]
    volatile_size = int.from_bytes(rest[:STATE_LENGTH_SIZE], "little")
    volatile = VolatileState.from_bytes(rest[STATE_LENGTH_SIZE:STATE_LENGTH_SIZE + volatile_size])
    found = {"null seed": volatile.null_seed, "null proof": volatile.null_proof}
    for handle in HIERARCHIES[:3]:
        name = TpmRh(handle).name.lower()
        found[f"{name} seed"] = state.seeds[handle]
        found[f"{name} proof"] = state.proofs[handle]
    return found


def _secrets(booted: Booted) -> dict[str, bytes]:
    svsm = booted.svsm
    found = _state_secrets(svsm)
    found["state-file key"] = svsm.at_vmpl0(svsm.keys.state_key)
    found["VMPCK0"] = svsm.at_vmpl0(lambda: svsm.requester.key)
    found["sealed disk key"] = DISK_KEY
    return found


def _registers(values: dict[str, int]) -> bytes:
    return b"".join(v.to_bytes(16, "little", signed=v < 0) for v in values.values())


def _host_view(snp: Any, booted: list[Booted], stored: bytes) -> dict[str, bytes]:
    """Every byte the host can read, by where it read it."""
    machine: Machine = snp.hv.machine
    view: dict[str, bytes] = {"state file": stored}
    top = 0
    for number, item in enumerate(booted):
        vm = item.guest.vm
        for spa in item.guest.frames:
            view[f"vm{number} frame {spa:#x}"] = machine.host_read(spa, PAGE_SIZE)
            top = max(top, spa + PAGE_SIZE)
        layout = item.svsm.layout
        for name in ("ghcb_gpa", "request_gpa", "response_gpa"):
            spa = vm.translate(getattr(layout, name))
            assert spa is not None
            view[f"vm{number} {name}"] = machine.host_read(spa, PAGE_SIZE)
        for vcpu in item.guest.vcpus:
            assert vcpu.vmsa_spa is not None
            view[f"vm{number} VMSA {vcpu.index}"] = machine.host_read(vcpu.vmsa_spa, PAGE_SIZE)
            view[f"vm{number} VMCB {vcpu.index}"] = _registers(vcpu.vmcb.save)
            top = max(top, vcpu.vmsa_spa + PAGE_SIZE)
        view[f"vm{number} exits"] = b"".join(
            _registers({"code": e.exit_code, "info1": e.exit_info1, "info2": e.exit_info2})
            + (_registers(e.vmcb.save) if e.vmcb is not None else b"")
            for e in item.guest.exits
        )
    view["DRAM handed out"] = machine.host_read(0, top)
    for number, (request, response) in enumerate(snp.relay.log):
        view[f"relay log {number}"] = request + (response or b"")
    return view


def _leaks(secrets: dict[str, bytes], view: dict[str, bytes]) -> list[str]:
    """Every (secret, place) where some 8-byte run of the secret appears."""
    found = []
    for secret_name, secret in secrets.items():
        assert len(secret) >= RUN and any(secret), secret_name
        runs = {secret[i:i + RUN] for i in range(len(secret) - RUN + 1)}
        for place, data in view.items():
            if any(run in data for run in runs):
                found.append(f"{secret_name} in {place}")
    return found


def test_no_secret_byte_reaches_the_host(snp: Any) -> None:
    booted, stored = _story(snp)
    secrets: dict[str, bytes] = {}
    for number, item in enumerate(booted):
        secrets.update({f"vm{number} {k}": v for k, v in _secrets(item).items()})
        derived = item.svsm.at_vmpl0(lambda s=item.svsm: s.requester.derived_key(
            KeyRequest(guest_field_select=STATE_KEY_FIELDS, vmpl=0)))
        secrets[f"vm{number} PSP-derived key"] = derived.derived_key
    # the same launch measurement derives the same key; the state survived the reboot
    assert secrets["vm0 state-file key"] == secrets["vm1 state-file key"]
    assert secrets["vm0 owner seed"] == secrets["vm1 owner seed"]
    view = _host_view(snp, booted, stored)
    assert len(snp.relay.log) >= 4  # key and report requests went through the host
    assert _leaks(secrets, view) == []

    # positive control 1: the secrets searched for are really in the SVSM's pages (VMPL0 view)
    svsm = booted[0].svsm
    plain = svsm.at_vmpl0(lambda: svsm.vcpu.read(svsm.layout.state_gpa, PAGE_SIZE))
    assert {"vm0 owner seed", "vm0 endorsement seed"} <= {
        name.split(" in ")[0] for name in _leaks(secrets, {"VMPL0 view": plain})}

    # positive control 2: a run planted in a shared page is found in the host's DRAM view
    vcpu = svsm.vcpu
    svsm.at_vmpl0(lambda: SevGuest(vcpu).make_shared(PLANT))
    seed = secrets["vm0 endorsement seed"]
    svsm.at_vmpl0(lambda: vcpu.write(PLANT + 0x123, seed[5:5 + RUN]))
    leaks = _leaks(secrets, _host_view(snp, booted, stored))
    spa = booted[0].guest.vm.translate(PLANT)
    assert f"vm0 endorsement seed in vm0 frame {spa:#x}" in leaks
    assert "vm0 endorsement seed in DRAM handed out" in leaks
    assert not [leak for leak in leaks if "endorsement" not in leak]


def test_a_broker_released_key_lives_in_the_key_page(snp: Any) -> None:
    released = hashlib.sha256(b"key released by the broker").digest()
    booted, stored = _story(snp, ReleasedKeyProvider(released))
    svsm = booted[1].svsm
    assert svsm.at_vmpl0(svsm.keys.state_key) == released
    key_page = svsm.at_vmpl0(lambda: svsm.vcpu.read(svsm.layout.key_gpa, PAGE_SIZE))
    assert released in key_page
    secrets = _state_secrets(svsm) | {"released key": released}
    assert _leaks(secrets, _host_view(snp, booted, stored)) == []


# ---- the SVSM object between calls ------------------------------------------------------------
OTHER_ACTORS = (VirtualMachine, Machine, SecureProcessor, Hypervisor, Guest, type,
                types.ModuleType)


def _reachable(root: object) -> Iterator[bytes]:
    """Every bytes value reachable from ``root`` through Python objects, short of the other
    actors: the silicon (DRAM, scanned above; the engine's keys), the PSP (which holds the
    VMPCKs by design) and the host (its view is scanned above)."""
    seen: set[int] = set()
    stack: list[object] = [root]
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, OTHER_ACTORS):
            continue
        seen.add(id(item))
        if isinstance(item, bytes | bytearray):
            yield bytes(item)
        elif isinstance(item, int) and not isinstance(item, bool) and item >= 0:
            yield item.to_bytes(max(1, (item.bit_length() + 7) // 8), "big")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        elif isinstance(item, types.FunctionType):
            stack.extend(c.cell_contents for c in item.__closure__ or () if c.cell_contents)
        elif isinstance(item, types.MethodType):
            stack.append(item.__self__)
        elif hasattr(item, "__dict__"):
            stack.extend(vars(item).values())


def _held(root: object, secrets: dict[str, bytes]) -> list[str]:
    values = list(_reachable(root))
    return [name for name, secret in secrets.items()
            if any(secret[i:i + RUN] in value for value in values
                   for i in range(len(secret) - RUN + 1))]


def test_the_svsm_object_holds_no_secret_between_calls(snp: Any) -> None:
    booted, _ = _story(snp)
    svsm = booted[1].svsm
    secrets = _state_secrets(svsm) | {"VMPCK0": svsm.at_vmpl0(lambda: svsm.requester.key)}
    secrets["state-file key"] = svsm.at_vmpl0(svsm.keys.state_key)
    assert _held(svsm, secrets) == []
    assert _held(booted[1].os, secrets) == []
    svsm.load_state()  # positive control: an engine with its state loaded is found
    assert {"owner seed", "endorsement proof", "null seed"} <= set(_held(svsm, secrets))
    svsm.unload()
    assert _held(svsm, secrets) == []


def test_seed_derived_keys_are_not_cached_outside_the_guest(snp: Any) -> None:
    """The EK's private prime is derived from the endorsement seed: no process-wide cache may
    keep it between calls, so deriving it twice does the work twice."""
    booted = _boot(snp, MonotonicCounter())
    assert not hasattr(tpm_keys.rsa_from_seed, "cache_info")
    _, manifest = booted.os.attest(hashlib.sha512(b"nonce").digest())  # derives the RSA EK
    assert len(manifest) > 256


# ---- the guest OS ---------------------------------------------------------------------------
def test_guest_os_reading_an_svsm_page_faults_with_the_vmpl_bit(snp: Any) -> None:
    booted = _boot(snp, MonotonicCounter(), keys=ReleasedKeyProvider(bytes(range(1, 33))))
    svsm, vcpu = booted.svsm, booted.svsm.vcpu
    layout: SvsmLayout = svsm.layout
    pages = [layout.state_gpa + n * PAGE_SIZE for n in range(layout.state_pages)]
    pages += [layout.key_gpa, svsm.requester.secrets_gpa]
    assert vcpu.vmpl == 1  # the guest OS runs at VMPL1
    for gpa in pages:
        with pytest.raises(FaultRaised) as fault:
            vcpu.read(gpa, 8)
        assert fault.value.fault.kind is FaultKind.NPF
        assert fault.value.fault.error_code & PFERR_VMPL, hex(gpa)
        assert fault.value.fault.vmpl == 1
    assert len(vcpu.read(BUFFER, 8)) == 8  # its own pages it reads


def _loaded_secrets(volatile: VolatileState) -> dict[str, bytes]:
    """The secrets of a volatile state beyond the null seed and proof: every loaded object's
    sensitive area and every session's key."""
    found = {}
    for handle, item in volatile.objects.items():
        if item.sensitive is not None:
            found[f"object {handle:#x} sensitive"] = item.sensitive.to_bytes()
    for handle, session in volatile.sessions.items():
        if len(session.session_key) >= RUN:
            found[f"session {handle:#x} key"] = session.session_key
    return found


def test_the_public_area_memo_holds_no_secret(snp: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The volatile state's reader keeps parsed public areas across calls
    (:func:`cvm.vtpm.volatile._public`): nothing else. Every sensitive area and session key
    the SVSM loaded during the story, and the seeds and proofs, are absent from it."""
    secrets: dict[str, bytes] = {}
    install = Svsm._install

    def recording(svsm: Svsm, persistent: bytes, volatile: bytes) -> None:
        install(svsm, persistent, volatile)
        secrets.update(_loaded_secrets(svsm.tpm.volatile()))
    monkeypatch.setattr(Svsm, "_install", recording)
    booted, _ = _story(snp)
    client = booted[1].client
    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    client.start_auth_session(TpmSe.HMAC, salt_key=srk, symmetric_bits=128)  # stays loaded
    client.pcr_read(SELECTION)
    assert any("sensitive" in name for name in secrets)  # the story loaded keyed objects
    assert any("session" in name for name in secrets)  # and salted or bound sessions
    svsm = booted[1].svsm
    secrets |= _state_secrets(svsm)
    assert volatile_module._PUBLICS  # the memo was used
    assert _held(volatile_module._PUBLICS, secrets) == []
    assert _held(svsm, secrets) == []
    # positive control: a secret in the memo is found
    name, secret = next((n, s) for n, s in secrets.items() if "sensitive" in n)
    monkeypatch.setitem(volatile_module._PUBLICS, b"planted" + secret, next(
        iter(volatile_module._PUBLICS.values())))
    assert name in _held(volatile_module._PUBLICS, secrets)


SEQUENCE_AUTH = hashlib.sha256(b"the authValue of a hash sequence").digest()
SEQUENCE_DATA = hashlib.sha512(b"the data a hash sequence holds").digest()


def _open_sequence(client: TpmClient, data: bytes) -> int:
    reply = client.call(TpmCc.HASH_SEQUENCE_START, params=tpm2b(SEQUENCE_AUTH)
                        + writer().u16(TpmAlg.SHA256).to_bytes(), response_handles=1)
    handle = reply.handles[0]
    client.names[handle] = b""  # a sequence's Name is empty
    client.call(TpmCc.SEQUENCE_UPDATE, (handle,), tpm2b(data), (Auth(SEQUENCE_AUTH),))
    return handle


def test_an_open_sequence_stays_in_the_svsm_pages(snp: Any) -> None:
    """A sequence's authValue and data live in the volatile state, in VMPL0 pages only."""
    booted = _boot(snp, MonotonicCounter())
    client, svsm = booted.client, booted.svsm
    handle = _open_sequence(client, SEQUENCE_DATA)
    secrets = {"sequence authValue": SEQUENCE_AUTH, "sequence data": SEQUENCE_DATA}
    stored = svsm.seal_state()
    assert _leaks(secrets, _host_view(snp, [booted], stored)) == []
    assert _held(svsm, secrets) == [] and _held(booted.os, secrets) == []
    # positive control: the SVSM's pages hold both
    pages = svsm.at_vmpl0(lambda: svsm.vcpu.read(svsm.layout.state_gpa,
                                                 svsm.layout.state_pages * PAGE_SIZE))
    assert {leak.split(" in ")[0] for leak in _leaks(secrets, {"VMPL0 view": pages})} == set(
        secrets)
    reply = client.call(TpmCc.SEQUENCE_COMPLETE, (handle,), tpm2b(b"")
                        + writer().u32(TpmRh.NULL).to_bytes(), (Auth(SEQUENCE_AUTH),))
    assert read_tpm2b(reply.params, "result") == hashlib.sha256(SEQUENCE_DATA).digest()


def test_the_largest_sequences_fit_the_state_pages(snp: Any) -> None:
    """Every open sequence full, beside a loaded key: the state still fits the SVSM's pages
    (about 19 KiB of the 32 KiB)."""
    booted = _boot(snp, MonotonicCounter())
    client = booted.client
    client.create_primary(TpmRh.OWNER, srk_template())
    handles = [_open_sequence(client, bytes(1024)) for _ in range(MAX_SEQUENCES)]
    for handle in handles:
        for _ in range(MAX_SEQUENCE_DATA // 1024 - 1):
            client.call(TpmCc.SEQUENCE_UPDATE, (handle,), tpm2b(bytes(1024)),
                        (Auth(SEQUENCE_AUTH),))
    _, volatile = booted.svsm._read_parts()
    assert len(volatile) > MAX_SEQUENCES * MAX_SEQUENCE_DATA
    for handle in handles:
        reply = client.call(TpmCc.SEQUENCE_COMPLETE, (handle,), tpm2b(b"")
                            + writer().u32(TpmRh.NULL).to_bytes(), (Auth(SEQUENCE_AUTH),))
        assert read_tpm2b(reply.params, "result") == hashlib.sha256(
            bytes(MAX_SEQUENCE_DATA)).digest()
