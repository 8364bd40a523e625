"""The volume key is sealed to the predicted boot: the owner's vTPM, restored from the sealed
state file, unseals each token for the predicted PCRs — and for no other."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from cvm.disk.dm_crypt import CryptDevice
from cvm.disk.file_store import FileStore
from cvm.disk.storage import FileStorage
from cvm.disk.volume import Luks2Volume
from cvm.errors import StatusError
from cvm.formats.pcr_signature import parse_pcr_signature
from cvm.formats.pe.image import PeImage
from cvm.formats.tcg.event_log import EventLog
from cvm.formats.tcg.event_type import EventType
from cvm.formats.tpm2.constants import TpmAlg
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.signature import Signature
from cvm.guest.tpm.client import TpmClient
from cvm.guest.tpm.luks_token import SystemdTpm2Token, tpm2_tokens, unlock
from cvm.guest.tpm.seal import SignedPolicy
from cvm.image.bundle import BuiltImage
from cvm.image.disk_layout import open_root
from cvm.vtpm.engine import Tpm
from cvm.vtpm.state import PersistentState
from cvm.vtpm.state_file import MonotonicCounter, ReleasedKeyProvider, open_state
from cvm.vtpm.templates import public_from_pem

ALGORITHMS = {TpmAlg.SHA1: "sha1", TpmAlg.SHA256: "sha256"}


def _vtpm(built: BuiltImage, log: EventLog, extra: tuple[int, bytes] | None = None
          ) -> TpmClient:
    """The image's vTPM from vtpm-state.bin, with ``log`` (and ``extra``) extended in."""
    key = (built.out / "host-vtpm-state.key").read_bytes()
    state = open_state((built.out / "vtpm-state.bin").read_bytes(), ReleasedKeyProvider(key),
                       MonotonicCounter(0))
    client = TpmClient(Tpm(PersistentState.from_bytes(state)).execute)
    client.startup()
    for event in log.events:
        if event.event_type == EventType.EV_NO_ACTION:
            continue
        digests = {alg: d for alg in ALGORITHMS if (d := event.digest(alg)) is not None}
        client.pcr_extend(event.pcr_index, digests)
    if extra is not None:
        client.pcr_extend(extra[0], {TpmAlg.SHA256: extra[1]})
    return client


@contextmanager
def _volume(built: BuiltImage) -> Iterator[Luks2Volume]:
    with FileStorage(built.out / "disk.img", read_only=True) as disk:
        yield open_root(disk, built.plan.layout)


def _signed_policies(built: BuiltImage, token: SystemdTpm2Token) -> list[SignedPolicy]:
    """Every entry of the UKI's .pcrsig section as a signed PolicyPCR for ``token``."""
    uki = next(s for s in built.chain.stages if s.name == "uki").data
    section = PeImage.parse(uki).section(".pcrsig")
    assert section is not None and token.pubkey_pem is not None
    signer = public_from_pem(token.pubkey_pem)
    return [SignedPolicy(signer, PcrSelectionList.of(e.bank, e.pcrs), e.policy,
                         Signature(TpmAlg.RSASSA, TpmAlg.SHA256, sig=e.signature))
            for e in parse_pcr_signature(section.loaded_data)]


def _unseal(built: BuiltImage, client: TpmClient, token_id: int) -> bytes:
    with _volume(built) as volume:
        token = tpm2_tokens(volume)[token_id]
        if not token.pubkey_pcrs:
            return unlock(volume, token, client)
        failures = []
        for signed in _signed_policies(built, token):
            try:
                return unlock(volume, token, client, signed=signed)
            except StatusError as error:
                failures.append(error)
        raise failures[0]


def _token_ids(built: BuiltImage) -> list[int]:
    return [t["id"] for t in built.manifest["tokens"]]


def test_every_token_unseals_for_the_predicted_boot_and_opens_the_root(
        built: BuiltImage) -> None:
    log = EventLog.parse(built.reference.event_log)
    keys = set()
    for token_id in _token_ids(built):
        keys.add(_unseal(built, _vtpm(built, log), token_id))
    assert len(keys) == 1
    (volume_key,) = keys
    with FileStorage(built.out / "disk.img") as disk:
        volume = open_root(disk, built.plan.layout)
        store = FileStore.open(CryptDevice(volume.storage, volume.segment, volume_key))
        assert store.read("/etc/hostname") == b"cvm\n"
        store.write("/srv/data/log", b"the workload wrote this")
        assert FileStore.open(CryptDevice(volume.storage, volume.segment, volume_key)
                              ).read("/srv/data/log") == b"the workload wrote this"


# The PCRs each chain's tokens are sealed to (the PCR token's and the signed token's together):
# the UKI's PCR 4+7 token and PCR 11 signed policy, the shim chain's PCR 4+7+8+9.
SEALED_PCRS = {"uki": (4, 7, 11), "shim-grub": (4, 7, 8, 9)}


def test_each_chain_seals_to_the_pcrs_the_tests_change(
        built_images: dict[str, BuiltImage]) -> None:
    for chain, built in built_images.items():
        sealed = {pcr for t in built.manifest["tokens"] for pcr in (*t["pcrs"],
                                                                  *t["pubkey_pcrs"])}
        assert sorted(sealed) == list(SEALED_PCRS[chain]), chain


@pytest.mark.parametrize(("chain", "pcr"), [(chain, pcr) for chain, pcrs in SEALED_PCRS.items()
                                            for pcr in pcrs])
def test_no_token_unseals_when_a_sealed_pcr_differs(
        built_images: dict[str, BuiltImage], chain: str, pcr: int) -> None:
    """One more extend of a PCR some token is sealed to leaves every such token sealed."""
    built = built_images[chain]
    log = EventLog.parse(built.reference.event_log)
    sealed_to = [t for t in built.manifest["tokens"] if pcr in (*t["pcrs"], *t["pubkey_pcrs"])]
    assert sealed_to
    for token in sealed_to:
        client = _vtpm(built, log, (pcr, bytes(32)))
        with pytest.raises(StatusError):
            _unseal(built, client, token["id"])


def test_the_signed_token_unseals_after_enter_initrd_too(
        built_images: dict[str, BuiltImage]) -> None:
    built = built_images["uki"]
    signed = next(t["id"] for t in built.manifest["tokens"] if t["policy"] == "signed")
    pcrs = next(t["id"] for t in built.manifest["tokens"] if t["policy"] == "pcrs")
    import hashlib

    phase = (11, hashlib.sha256(b"enter-initrd").digest())
    log = EventLog.parse(built.reference.event_log)
    assert len(_unseal(built, _vtpm(built, log, phase), signed)) == 64
    with pytest.raises(StatusError):
        _unseal(built, _vtpm(built, log, phase), pcrs)


def test_another_vtpm_cannot_load_the_sealed_object(built: BuiltImage) -> None:
    """The sealed blob belongs to the manufactured vTPM: a fresh one with the same PCRs fails."""
    log = EventLog.parse(built.reference.event_log)
    client = TpmClient(Tpm().execute)
    client.startup()
    for event in log.events:
        if event.event_type != EventType.EV_NO_ACTION:
            digest = event.digest(TpmAlg.SHA256)
            if digest is not None:
                client.pcr_extend(event.pcr_index, {TpmAlg.SHA256: digest})
    with pytest.raises(StatusError):
        _unseal(built, client, _token_ids(built)[0])
