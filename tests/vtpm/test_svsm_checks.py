"""The SVSM's own decisions at VMPL0, one by one: which guest-OS addresses it serves, which of
its pages it never hands out, what PVALIDATE answers, when it starts, and how it refuses its
own corrupt state (the call protocols' decisions are in tests/guest/svsm)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from cvm.crypto.drbg import SeededRandom
from cvm.errors import IntegrityError, StateError, StatusError
from cvm.formats.snp.key_request import KeyResponse
from cvm.formats.snp.report_request import ReportResponse
from cvm.formats.svsm.attest_request import AttestRequest
from cvm.formats.svsm.pvalidate_request import PvalidateEntry, PvalidateRequest
from cvm.formats.svsm.services_manifest import VTPM_SERVICE_GUID
from cvm.formats.svsm.vtpm_command import VtpmCommandRequest
from cvm.formats.tpm2.constants import TpmAlg
from cvm.guest.kernel.sev_guest import SevGuest
from cvm.guest.svsm.attestation import ATTEST_SINGLE_SERVICE, PROTOCOL_ATTEST
from cvm.guest.svsm.core import CORE_PVALIDATE, PROTOCOL_CORE
from cvm.guest.svsm.result import SvsmResult
from cvm.guest.svsm.svsm import Svsm, SvsmLayout, own_pages
from cvm.guest.svsm.vtpm import PROTOCOL_VTPM, VTPM_COMMAND
from cvm.guest.tpm.client import TpmClient
from cvm.guest.tpm.svsm_guest import SvsmGuest
from cvm.hardware.memory.dram import PAGE_SIZE
from cvm.vtpm.pcr import PcrBanks
from cvm.vtpm.state import STATE_MAGIC, PersistentState
from cvm.vtpm.state_file import KeySource, MonotonicCounter
from cvm.vtpm.volatile import VolatileState

BUFFER, SCRATCH = 0x20000, 0x21000
GET_RANDOM = bytes.fromhex("80010000000c0000017b0008")
LAYOUT = SvsmLayout()


def _boot(snp: Any) -> tuple[Svsm, SvsmGuest, Any]:
    launched = snp.launch()
    vcpu = launched.guest.vcpus[0]
    svsm = Svsm.start(vcpu, launched.secrets_gpa, MonotonicCounter(), snp.random)
    svsm.grant(BUFFER, 2)
    return svsm, SvsmGuest(vcpu, svsm, BUFFER, SCRATCH), vcpu


def _own_pages(svsm: Svsm) -> list[int]:
    return [LAYOUT.ghcb_gpa, LAYOUT.request_gpa, LAYOUT.response_gpa, LAYOUT.key_gpa,
            LAYOUT.guest_vmsa_gpa, LAYOUT.caa_gpa, svsm.requester.secrets_gpa,
            *(LAYOUT.state_gpa + i * PAGE_SIZE for i in range(LAYOUT.state_pages))]


def _attest(guest: SvsmGuest, vcpu: Any, nonce_gpa: int, report_gpa: int = SCRATCH + 0x800,
            manifest_gpa: int = SCRATCH + 0x400, nonce_size: int = 32) -> int:
    request = AttestRequest(report_gpa, 0x800, nonce_gpa, nonce_size, manifest_gpa, 0x400,
                            service=VTPM_SERVICE_GUID)
    vcpu.write(SCRATCH, request.to_bytes())
    return guest.call(PROTOCOL_ATTEST, ATTEST_SINGLE_SERVICE, SCRATCH)[0]


# ---- the guest OS's addresses --------------------------------------------------------------
def test_the_guest_os_cannot_have_the_svsm_read_its_key_page_into_a_report(snp: Any) -> None:
    """The SVSM reads at VMPL0, where every page is readable: a nonce at the key page (the state
    key) or at the secrets page (VMPCK0) would be hashed into REPORT_DATA and handed back."""
    svsm, guest, vcpu = _boot(snp)
    for page in (LAYOUT.key_gpa, svsm.requester.secrets_gpa, LAYOUT.state_gpa):
        assert _attest(guest, vcpu, page) == SvsmResult.ERR_INVALID_ADDRESS
    assert _attest(guest, vcpu, SCRATCH + 0x100) == SvsmResult.SUCCESS


@pytest.mark.parametrize("at", ["report", "manifest"])
def test_the_guest_os_cannot_have_the_svsm_write_over_its_state_pages(snp: Any, at: str) -> None:
    """A report (or manifest) aimed at a state page, or at the last bytes before one so that it
    runs into it, is refused and the state stays whole; one ending right before it is served."""
    svsm, guest, vcpu = _boot(snp)
    state = svsm.read_state()
    last = LAYOUT.state_gpa + (LAYOUT.state_pages - 1) * PAGE_SIZE
    for target in (LAYOUT.state_gpa, last + 0x10, LAYOUT.state_gpa - 0x10):
        gpas = ({"report_gpa": target} if at == "report" else {"manifest_gpa": target})
        assert _attest(guest, vcpu, SCRATCH + 0x100, **gpas) == SvsmResult.ERR_INVALID_ADDRESS
    assert svsm.read_state() == state
    svsm.grant(LAYOUT.state_gpa - PAGE_SIZE, 1)  # the page before the state: the guest OS's
    size = 0x4A0 if at == "report" else len(svsm.ek_public())
    target = LAYOUT.state_gpa - size
    gpas = ({"report_gpa": target} if at == "report" else {"manifest_gpa": target})
    assert _attest(guest, vcpu, SCRATCH + 0x100, **gpas) == SvsmResult.SUCCESS
    assert svsm.read_state() == state


def test_a_vtpm_buffer_in_an_svsm_page_is_an_invalid_address(snp: Any) -> None:
    """The command buffer is read and overwritten whole: never in one of the SVSM's pages,
    even one holding a well-formed request."""
    svsm, guest, vcpu = _boot(snp)
    state = svsm.read_state()
    request = VtpmCommandRequest(0, GET_RANDOM).to_bytes().ljust(PAGE_SIZE, b"\x00")
    svsm.at_vmpl0(lambda: vcpu.write(LAYOUT.key_gpa, request))
    for page in (LAYOUT.key_gpa, LAYOUT.state_gpa, LAYOUT.caa_gpa):
        assert guest.call(PROTOCOL_VTPM, VTPM_COMMAND, page)[0] == SvsmResult.ERR_INVALID_ADDRESS
    assert svsm.at_vmpl0(lambda: vcpu.read(LAYOUT.key_gpa, PAGE_SIZE)) == request
    assert svsm.read_state() == state
    vcpu.write(BUFFER, request)
    assert guest.call(PROTOCOL_VTPM, VTPM_COMMAND, BUFFER)[0] == SvsmResult.SUCCESS


def test_a_pvalidate_request_in_an_svsm_page_is_an_invalid_address(snp: Any) -> None:
    svsm, guest, vcpu = _boot(snp)
    request = PvalidateRequest((PvalidateEntry(0x31, True),)).to_bytes()
    svsm.at_vmpl0(lambda: vcpu.write(LAYOUT.key_gpa + 0x800, request))
    assert guest.call(PROTOCOL_CORE, CORE_PVALIDATE,
                      LAYOUT.key_gpa + 0x800)[0] == SvsmResult.ERR_INVALID_ADDRESS
    assert svsm.at_vmpl0(lambda: vcpu.read(LAYOUT.key_gpa + 0x800, len(request))) == request


def test_every_guest_range_is_checked_page_by_page(snp: Any) -> None:
    """The SVSM's test of a range: every page it touches, from the first byte to the last."""
    svsm, _, _ = _boot(snp)
    key, state = LAYOUT.key_gpa, LAYOUT.state_gpa
    assert svsm._guest_memory(BUFFER, PAGE_SIZE) and svsm._guest_memory(state - 8, 8)
    assert not svsm._guest_memory(state - 8, 9) and not svsm._guest_memory(key + 0xFFF, 1)
    assert not svsm._guest_memory(state - PAGE_SIZE, 3 * PAGE_SIZE)
    assert svsm._guest_read(state, 4) is None and not svsm._guest_write(key, b"\x00")
    assert svsm._guest_read(key + PAGE_SIZE - 1, 1) is None
    assert svsm._guest_write(BUFFER, b"x") and svsm._guest_read(BUFFER, 1) == b"x"


def test_an_address_the_vcpu_cannot_reach_is_none_not_a_fault(snp: Any) -> None:
    """Unmapped guest memory (or a VMSA page the RMP refuses to write) is "not there"."""
    svsm, _, _ = _boot(snp)
    assert svsm._guest_read(1 << 40, 16) is None
    assert not svsm._guest_write(1 << 40, b"x")


# ---- the SVSM's own pages ------------------------------------------------------------------
def test_every_svsm_page_is_its_own_at_any_offset_and_its_neighbours_are_not(snp: Any) -> None:
    svsm, _, _ = _boot(snp)
    for page in _own_pages(svsm):
        assert svsm._own_page(page) and svsm._own_page(page + 0x123)
        assert svsm._own_page(page + PAGE_SIZE - 1)
    for other in (LAYOUT.state_gpa - PAGE_SIZE, BUFFER, 0x30000, LAYOUT.caa_gpa + PAGE_SIZE):
        assert not svsm._own_page(other) and not svsm._own_page(other + 0x800)


def test_the_own_pages_follow_the_secrets_page_and_the_layout(snp: Any) -> None:
    """The set of the SVSM's own pages is worked out once, and again when the secrets page's
    address or the layout is not the one it was worked out from."""
    svsm, _, _ = _boot(snp)
    secrets = svsm.requester.secrets_gpa
    first = svsm._own_pages()
    assert svsm._own_pages() is first  # worked out once, not at every address
    assert svsm._own_page(secrets) and not svsm._own_page(0x30000)
    svsm.requester.secrets_gpa = 0x30000
    assert svsm._own_page(0x30000) and not svsm._own_page(secrets)
    assert not svsm._guest_memory(0x30000 + 0x10, 1)
    moved = dataclasses.replace(LAYOUT, key_gpa=0x31000)
    svsm.layout = moved
    assert svsm._own_page(0x31000) and not svsm._own_page(LAYOUT.key_gpa)
    svsm.layout = dataclasses.replace(moved)  # equal, not the same object: worked out again
    assert svsm._own_pages() == own_pages(moved, 0x30000)
    assert own_pages(LAYOUT, secrets) == frozenset(_own_pages_of(LAYOUT, secrets))


def test_a_layout_address_inside_a_page_keeps_the_whole_page(snp: Any) -> None:
    """A key (or any SVSM address) placed inside a page, not at its start: the page is the
    SVSM's, so an address the guest OS passes into any of it is refused."""
    svsm, _, _ = _boot(snp)
    svsm.layout = dataclasses.replace(LAYOUT, key_gpa=0x31010, caa_gpa=0x32FFF)
    assert svsm._own_page(0x31000) and svsm._own_page(0x31FFF) and svsm._own_page(0x32000)
    assert not svsm._guest_memory(0x31000, 16) and not svsm._guest_memory(0x31010, 32)
    assert not svsm._guest_memory(0x30FF0, 0x20) and svsm._guest_memory(0x30FF0, 0x10)
    assert own_pages(svsm.layout, 0x33008) >= {0x31000, 0x32000, 0x33000}


def _own_pages_of(layout: SvsmLayout, secrets: int) -> list[int]:
    return [layout.ghcb_gpa, layout.request_gpa, layout.response_gpa, layout.key_gpa,
            layout.guest_vmsa_gpa, layout.caa_gpa, secrets,
            *(layout.state_gpa + i * PAGE_SIZE for i in range(layout.state_pages))]


def test_the_guest_os_cannot_pvalidate_any_svsm_page(snp: Any) -> None:
    """Every page the SVSM keeps (its PSP channel, the secrets page, each state page, the key
    page, the guest OS's VMSA, the calling area) is refused, with nothing done."""
    svsm, guest, _ = _boot(snp)
    for page in _own_pages(svsm):
        with pytest.raises(StatusError) as refused:
            guest.pvalidate([page], validate=False)
        assert refused.value.code == SvsmResult.ERR_INVALID_PARAMETER
    assert svsm.read_state().startswith(STATE_MAGIC)
    assert svsm.at_vmpl0(lambda: svsm.requester.seqno) == 0  # the channel still works
    svsm.report(bytes(64))


# ---- PVALIDATE's answers -------------------------------------------------------------------
def test_a_page_the_rmp_holds_as_2m_is_a_size_mismatch(snp: Any) -> None:
    _, guest, vcpu = _boot(snp)
    page = 0x32000
    vcpu.vm.machine.rmp.entry(vcpu.vm.translate(page)).page_size_2m = True
    with pytest.raises(StatusError) as refused:
        guest.pvalidate([page])
    assert refused.value.code == SvsmResult.ERR_PVALIDATE_FAIL_SIZEMISMATCH


def test_a_page_not_the_guests_is_a_failed_input(snp: Any) -> None:
    """A page the host took back (RMP FAIL_INPUT), or one not mapped at all: FAIL_INPUT."""
    _, guest, vcpu = _boot(snp)
    page = 0x33000
    vcpu.vm.machine.rmp.rmpupdate(vcpu.vm.translate(page), assigned=False)
    for gpa in (page, 1 << 40):
        with pytest.raises(StatusError) as refused:
            guest.pvalidate([gpa])
        assert refused.value.code == SvsmResult.ERR_PVALIDATE_FAIL_INPUT


def test_unchanged_ignored_still_grants_the_page(snp: Any) -> None:
    """A page already validated by the SVSM, asked again with "ignore unchanged": success,
    and the guest OS may use it."""
    svsm, guest, vcpu = _boot(snp)
    page = 0x34000
    svsm.at_vmpl0(lambda: svsm.kernel.pvalidate(page, validate=True))
    assert guest.pvalidate([page], ignore_cf=True) == 1
    vcpu.write(page, b"granted")
    assert vcpu.read(page, 7) == b"granted"


# ---- start, entry and state ----------------------------------------------------------------
def test_the_svsm_starts_only_at_vmpl0(snp: Any) -> None:
    svsm, _, vcpu = _boot(snp)
    assert vcpu.vmpl == 1
    with pytest.raises(StateError, match=r"^the SVSM starts at VMPL0, the vCPU runs at VMPL1$"):
        Svsm.start(vcpu, svsm.requester.secrets_gpa, MonotonicCounter(), snp.random)


def test_a_call_pending_byte_other_than_1_is_no_call(snp: Any) -> None:
    svsm, _, vcpu = _boot(snp)
    before = svsm.calls
    vcpu.set_register("rax", PROTOCOL_VTPM << 32)
    for pending in (2, 0xFF):
        vcpu.write(LAYOUT.caa_gpa, bytes([pending]))
        SevGuest(vcpu).run_vmpl(0)
        assert svsm.calls == before and vcpu.register("rax") == PROTOCOL_VTPM << 32
        assert vcpu.read(LAYOUT.caa_gpa, 1) == bytes([pending])


def test_work_the_svsm_did_not_run_is_an_error(snp: Any) -> None:
    """``at_vmpl0`` from the guest OS returns what the SVSM's entry code computed; an entry
    that never ran the work leaves nothing to return."""
    svsm, _, vcpu = _boot(snp)
    assert svsm.at_vmpl0(lambda: vcpu.vmpl) == 0
    vcpu.entry_code[0] = lambda: SevGuest(vcpu).leave_to(1)
    with pytest.raises(StateError, match=r"^the SVSM did not run the requested work$"):
        svsm.at_vmpl0(lambda: 1)


def test_a_state_larger_than_its_pages_is_refused(snp: Any) -> None:
    svsm, _, _ = _boot(snp)
    room = LAYOUT.state_pages * PAGE_SIZE
    svsm._write_parts(b"p" * (room - 9), b"v")
    assert svsm._read_parts() == (b"p" * (room - 9), b"v")
    with pytest.raises(StateError, match=rf"^vTPM state of {room + 1} bytes exceeds the "
                                         rf"{room}-byte pages$"):
        svsm._write_parts(b"p" * (room - 8), b"v")


def test_state_pages_that_do_not_parse_are_corrupt(snp: Any) -> None:
    svsm, guest, _ = _boot(snp)
    svsm._write_parts(b"not a vTPM state", b"")
    with pytest.raises(StateError, match=r"^vTPM state pages are corrupt: "):
        guest.tpm_execute(GET_RANDOM)


def test_a_refused_report_request_is_the_svsms_fault(snp: Any, monkeypatch: Any) -> None:
    svsm, _, _ = _boot(snp)
    monkeypatch.setattr(svsm.requester, "report", lambda data, vmpl: ReportResponse(0x16))
    with pytest.raises(StatusError, match=r"^MSG_REPORT_REQ failed with status 0x16$") as error:
        svsm.report(bytes(64))
    assert error.value.code == 0x16


def test_a_refused_key_request_is_the_svsms_fault(snp: Any) -> None:
    """The PSP-derived state key: a MSG_KEY_REQ the firmware refuses gives no key."""
    svsm, _, _ = _boot(snp)

    class Refusing:
        def derived_key(self, request: object) -> KeyResponse:
            return KeyResponse(0x16)

    provider = Svsm._key_provider(svsm.vcpu, Refusing(), LAYOUT, None)  # type: ignore[arg-type]
    with pytest.raises(StatusError, match=r"^MSG_KEY_REQ failed with status 0x16$") as error:
        provider.state_key()
    assert error.value.code == 0x16


def test_a_second_length_in_the_next_page_is_read_from_it(snp: Any) -> None:
    """A first part that ends its page puts the second part's length at the start of the next
    page: the SVSM reads that page before it reads the length."""
    svsm, _, vcpu = _boot(snp)
    first, second = bytes(range(256)) * 15 + b"\x01" * (PAGE_SIZE - 4 - 3840), b"abc"
    blob = len(first).to_bytes(4, "little") + first + len(second).to_bytes(4, "little") + second
    svsm.at_vmpl0(lambda: vcpu.write(LAYOUT.state_gpa, blob))
    assert svsm._read_parts() == (first, second)


def test_each_call_is_counted(snp: Any) -> None:
    svsm, guest, _ = _boot(snp)
    before = svsm.calls
    guest.vtpm_query()
    guest.query_protocol(PROTOCOL_VTPM)
    assert svsm.calls == before + 2


def test_between_calls_the_engine_holds_a_blank_state(snp: Any) -> None:
    """After a call the engine is reset to nothing: not started, no null seed or proof, no
    PCRs, objects or sessions, no persistent state (the pages alone hold them)."""
    svsm, guest, _ = _boot(snp)
    client = TpmClient(guest.tpm_execute)
    client.startup()
    client.pcr_extend(7, {TpmAlg.SHA256: bytes(32)})
    blank = VolatileState(False, b"", b"", PcrBanks(), {}, {})
    assert svsm.tpm.volatile().to_bytes() == blank.to_bytes()
    assert svsm.tpm.state == PersistentState({}, {})


# ---- start's choices -----------------------------------------------------------------------
def test_a_started_svsm_has_served_no_call_and_serves_a_call_first(snp: Any) -> None:
    """Starting (and the platform's work) is no call; the first switch to VMPL0 after start
    may be a call, and it is the first one counted."""
    launched = snp.launch()
    vcpu = launched.guest.vcpus[0]
    svsm = Svsm.start(vcpu, launched.secrets_gpa, MonotonicCounter(), snp.random)
    assert svsm.calls == 0
    assert SvsmGuest(vcpu, svsm, BUFFER, SCRATCH).vtpm_query() == 1 << 8
    assert svsm.calls == 1


def test_the_svsm_uses_the_pages_its_layout_names(snp: Any) -> None:
    """Another layout: the PSP channel, calling area, key and state pages move with it."""
    layout = SvsmLayout(ghcb_gpa=0x4000, request_gpa=0x5000, response_gpa=0x6000,
                        state_gpa=0x40000, state_pages=4, key_gpa=0x44000,
                        guest_vmsa_gpa=0x45000, caa_gpa=0x46000)
    launched = snp.launch()
    vcpu = launched.guest.vcpus[0]
    svsm = Svsm.start(vcpu, launched.secrets_gpa, MonotonicCounter(), snp.random,
                      layout=layout)
    requester = svsm.requester
    assert (requester.ghcb_gpa, requester.request_gpa, requester.response_gpa,
            requester.vmpck) == (0x4000, 0x5000, 0x6000, 0)
    assert svsm.kernel.ghcb_gpa == 0x4000
    svsm.grant(BUFFER, 2)
    guest = SvsmGuest(vcpu, svsm, BUFFER, SCRATCH)
    assert guest.vtpm_query() == 1 << 8
    assert svsm.at_vmpl0(lambda: vcpu.read(0x40000, 4)) == (
        len(svsm.read_state()).to_bytes(4, "little"))
    assert svsm.report(bytes(64))[:4] != bytes(4)
    for page in (0x4000, 0x5000, 0x6000, 0x40000, 0x43000, 0x44000, 0x45000, 0x46000):
        assert svsm._own_page(page)
    assert not svsm._own_page(0x47000) and not svsm._own_page(LAYOUT.state_gpa)


class Agent:
    """A key broker's agent as the SVSM sees it: runs its exchange at VMPL0 and leaves the
    state key in the key page (what it was handed is recorded)."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.given: list[tuple[Any, Any, int, Any, int]] = []

    def obtain_state_key(self, vcpu: Any, requester: Any, key_gpa: int, random: Any) -> None:
        self.given.append((vcpu, requester, key_gpa, random, vcpu.vmpl))
        vcpu.write(key_gpa, self.key)


def test_a_key_broker_agent_is_handed_the_vcpu_channel_key_page_and_randomness(
        snp: Any) -> None:
    launched = snp.launch()
    vcpu = launched.guest.vcpus[0]
    key = bytes(range(7, 39))
    agent, counter = Agent(key), MonotonicCounter()
    svsm = Svsm.start(vcpu, launched.secrets_gpa, counter, snp.random, broker=agent)
    assert agent.given == [(vcpu, svsm.requester, LAYOUT.key_gpa, snp.random, 0)]
    assert svsm.keys.source is KeySource.BROKER_RELEASED
    assert svsm.at_vmpl0(svsm.keys.state_key) == key
    sealed = svsm.seal_state()
    again = Svsm.start(snp.launch().guest.vcpus[0], launched.secrets_gpa, counter, snp.random,
                       sealed, broker=Agent(key))
    assert again.read_state() == svsm.read_state()
    with pytest.raises(IntegrityError):
        Svsm.start(snp.launch().guest.vcpus[0], launched.secrets_gpa, counter, snp.random,
                   sealed, broker=Agent(bytes(range(8, 40))))


def test_the_vtpm_draws_on_the_randomness_the_svsm_is_given(snp: Any) -> None:
    """The vTPM's randomness is the SVSM's (the CPU's): two SVSMs given the same stream
    answer TPM2_GetRandom alike, and another stream answers otherwise."""
    answers = []
    for seed in (b"same", b"same", b"other"):
        launched = snp.launch()
        vcpu = launched.guest.vcpus[0]
        svsm = Svsm.start(vcpu, launched.secrets_gpa, MonotonicCounter(), SeededRandom(seed))
        svsm.grant(BUFFER, 2)
        client = TpmClient(SvsmGuest(vcpu, svsm, BUFFER, SCRATCH).tpm_execute)
        client.startup()
        answers.append(client.get_random(16))
    assert answers[0] == answers[1] != answers[2]


@pytest.mark.parametrize("size", [1, 0x7F0, PAGE_SIZE + 1])
def test_the_state_is_written_as_whole_zero_padded_pages(snp: Any, size: int) -> None:
    """Whatever the parts' size, the pages they reach are written whole: nothing the pages
    held before stays after the state in its last page."""
    svsm, _, vcpu = _boot(snp)
    marker = b"\xee" * (2 * PAGE_SIZE)
    svsm.at_vmpl0(lambda: vcpu.write(LAYOUT.state_gpa, marker))
    svsm._write_parts(b"p" * size, b"v")
    pages = svsm.at_vmpl0(lambda: vcpu.read(LAYOUT.state_gpa, 2 * PAGE_SIZE))
    used = 8 + size + 1
    assert pages[:used] == (size.to_bytes(4, "little") + b"p" * size + (1).to_bytes(4, "little")
                            + b"v")
    end = -(-used // PAGE_SIZE) * PAGE_SIZE
    assert pages[used:end] == bytes(end - used) and pages[end:] == marker[end:]


@pytest.mark.parametrize("lengths", [
    (b"\x00\x00\x00\x01", b""),  # the first length: 16 MiB little-endian (1 big-endian)
    (b"\x04\x00\x00\x00", b"\x00\x00\x00\x02"),  # the second: 32 MiB (2 big-endian)
])
def test_lengths_are_little_endian_and_a_huge_one_is_corrupt(
        snp: Any, lengths: tuple[bytes, bytes]) -> None:
    """The state pages' lengths are u32 little-endian: one far beyond the pages is corruption,
    even where its bytes read big-endian would be a small length that fits."""
    svsm, _, vcpu = _boot(snp)
    first, second = lengths
    blob = first + (b"abcd" + second if second else b"") + bytes(64)
    svsm.at_vmpl0(lambda: vcpu.write(LAYOUT.state_gpa, blob))
    with pytest.raises(StateError, match=r"^vTPM state pages are corrupt$"):
        svsm._read_parts()
