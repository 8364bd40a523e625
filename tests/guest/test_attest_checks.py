"""The guest's evidence (:mod:`cvm.guest.attest`): what it asks its SVSM for, what it quotes
and with which key, what it bundles — checked against the vTPM's own public area, a signature
check by ``cryptography`` and hashes computed here, not by the code under test."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from cvm.crypto.drbg import SeededRandom
from cvm.formats.tpm2.attest import QuoteAttest
from cvm.formats.tpm2.constants import TpmAlg, TpmCc, TpmRh
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.public import EccPoint, Public
from cvm.formats.tpm2.signature import Signature
from cvm.guest.attest import (
    DEFAULT_QUOTED_PCRS,
    AttestationAgent,
    Certificates,
    VtpmPcrBank,
    produce_evidence,
)
from cvm.guest.tpm.client import TpmClient
from cvm.vtpm.engine import Tpm
from cvm.vtpm.templates import ak_template

TEE_KEY = {"kty": "EC", "crv": "P-256", "x": "eA", "y": "eQ"}
CERTIFICATES = Certificates(b"vcek-der", b"ask-der", b"ark-der", b"crl-der")
REPORT = b"\x52" * 0x4A0
MANIFEST = b"the vTPM manifest"
LOG = b"the firmware's event log"


class FakeSvsm:
    """Stands for the SVSM: records each attestation nonce, answers a fixed report."""

    def __init__(self) -> None:
        self.nonces: list[bytes] = []

    def attest(self, nonce: bytes) -> tuple[bytes, bytes]:
        self.nonces.append(nonce)
        return REPORT, MANIFEST


class Recorder:
    """A transport to the vTPM that keeps the command codes sent and the handles flushed."""

    def __init__(self) -> None:
        self.tpm = Tpm(random=SeededRandom(b"guest attest"), clock=lambda: 1000.0)
        self.codes: list[int] = []

    def __call__(self, command: bytes) -> bytes:
        self.codes.append(int.from_bytes(command[6:10], "big"))
        return self.tpm.execute(command)

    def loaded(self, client: TpmClient) -> list[int]:
        """Handles of the transient objects the vTPM holds (TPM2_GetCapability, handles)."""
        more, data = client.get_capability(1, 0x80000000, 64)
        assert not more and int.from_bytes(data[:4], "big") == 1
        count = int.from_bytes(data[4:8], "big")
        return [int.from_bytes(data[8 + 4 * i : 12 + 4 * i], "big") for i in range(count)]


def _client() -> tuple[TpmClient, Recorder]:
    recorder = Recorder()
    client = TpmClient(recorder, random=SeededRandom(b"guest attest client"))
    client.startup()
    return client, recorder


def _digest(nonce: str, key: dict[str, Any]) -> bytes:
    text = json.dumps({"nonce": nonce, "tee-pubkey": key}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha384(text.encode()).digest()


def _check(evidence: Any, svsm: FakeSvsm, client: TpmClient, nonce: str,
           pcrs: tuple[int, ...]) -> Public:
    """Every part of ``evidence`` checked from scratch; returns the AK's public area."""
    digest = _digest(nonce, TEE_KEY)
    ak = Public.from_bytes(evidence.ak_public)
    assert (ak.type, ak.name_alg) == (TpmAlg.ECC, TpmAlg.SHA256)
    ak_name = TpmAlg.SHA256.to_bytes(2, "big") + hashlib.sha256(evidence.ak_public).digest()
    assert svsm.nonces[-1] == digest + ak_name
    assert (evidence.report, evidence.svsm_manifest, evidence.event_log) == (
        REPORT, MANIFEST, LOG)
    assert (evidence.vcek, evidence.ask, evidence.ark, evidence.crl) == (
        b"vcek-der", b"ask-der", b"ark-der", b"crl-der")
    quote = QuoteAttest.from_bytes(evidence.quote_attest)
    assert quote.extra_data == digest
    assert quote.pcr_select == PcrSelectionList.of("sha256", list(pcrs))
    values = [client.pcr_read(PcrSelectionList.of("sha256", [pcr]))[2][0] for pcr in pcrs]
    assert quote.pcr_digest == hashlib.sha256(b"".join(values)).digest()
    signature = Signature.from_bytes(evidence.quote_signature)
    assert (signature.sig_alg, signature.hash_alg) == (TpmAlg.ECDSA, TpmAlg.SHA256)
    assert isinstance(ak.unique, EccPoint)
    point = ec.EllipticCurvePublicNumbers(int.from_bytes(ak.unique.x, "big"),
                                          int.from_bytes(ak.unique.y, "big"), ec.SECP256R1())
    der = utils.encode_dss_signature(int.from_bytes(signature.r, "big"),
                                     int.from_bytes(signature.s, "big"))
    point.public_key().verify(der, evidence.quote_attest, ec.ECDSA(hashes.SHA256()))
    return ak


def test_the_evidence_binds_the_nonce_the_key_and_the_ak_then_flushes_it() -> None:
    client, recorder = _client()
    client.pcr_extend(14, {TpmAlg.SHA256: b"\x14" * 32})  # a quoted PCR away from zero
    svsm = FakeSvsm()
    evidence = produce_evidence(svsm, client, "nonce-1", TEE_KEY, LOG,  # type: ignore[arg-type]
                                CERTIFICATES)
    _check(evidence, svsm, client, "nonce-1", DEFAULT_QUOTED_PCRS)
    assert recorder.codes.count(TpmCc.CREATE_PRIMARY) == 1
    assert recorder.codes.count(TpmCc.FLUSH_CONTEXT) == 1
    assert recorder.loaded(client) == []
    # The AK is the endorsement hierarchy's: created there again, it is the same key.
    again, public = client.create_primary(TpmRh.ENDORSEMENT, ak_template("ecc"))
    assert public.to_bytes() == evidence.ak_public
    client.flush(again)
    # A certificate chain without a CRL stays without one.
    bare = produce_evidence(svsm, client, "nonce-1", TEE_KEY, LOG,  # type: ignore[arg-type]
                            Certificates(b"v", b"a", b"r"), pcrs=(7,))
    assert bare.crl is None and bare.ak_public == evidence.ak_public
    assert QuoteAttest.from_bytes(bare.quote_attest).pcr_select == PcrSelectionList.of(
        "sha256", [7])


def test_the_default_quote_covers_the_boot_pcrs() -> None:
    """PCRs 0-7 (firmware, Secure Boot), 8-9 (boot loader, kernel and initrd), 11 (the UKI) and
    14 (MOK); not 10 (IMA) or 12/13/15, which change at run time or are the OS's own."""
    assert DEFAULT_QUOTED_PCRS == (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 14)


def test_the_agent_makes_one_ak_and_keeps_it_loaded() -> None:
    client, recorder = _client()
    svsm = FakeSvsm()
    agent = AttestationAgent(svsm, client, LOG, CERTIFICATES,  # type: ignore[arg-type]
                             pcrs=(0, 7))
    first = agent.evidence("nonce-a", TEE_KEY)
    _check(first, svsm, client, "nonce-a", (0, 7))
    second = agent.evidence("nonce-b", TEE_KEY)
    _check(second, svsm, client, "nonce-b", (0, 7))
    assert first.ak_public == second.ak_public
    assert recorder.codes.count(TpmCc.CREATE_PRIMARY) == 1
    assert TpmCc.FLUSH_CONTEXT not in recorder.codes
    assert len(recorder.loaded(client)) == 1
    default = AttestationAgent(svsm, client, LOG, CERTIFICATES)  # type: ignore[arg-type]
    quote = QuoteAttest.from_bytes(default.evidence("n", TEE_KEY).quote_attest)
    assert quote.pcr_select == PcrSelectionList.of("sha256", list(DEFAULT_QUOTED_PCRS))


@pytest.mark.parametrize("pcr", [0, 7, 23])
def test_the_firmware_bank_extends_and_reads_the_sha256_bank(pcr: int) -> None:
    client, recorder = _client()
    bank = VtpmPcrBank(client)
    assert bank.banks == ("sha256",)
    measurement = hashlib.sha256(b"measured").digest()
    bank.extend(pcr, {"sha256": measurement, "sha384": b"\x00" * 48})
    expected = hashlib.sha256(bytes(32) + measurement).digest()
    assert bank.read(pcr, "sha256") == expected
    assert recorder.codes.count(TpmCc.PCR_EXTEND) == 1
    values = client.pcr_read(PcrSelectionList.of("sha1", [pcr]))[2]
    assert values == [bytes(20)]  # the SHA-1 bank untouched
