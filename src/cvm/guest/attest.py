"""Evidence production inside the guest: what an attestation agent in the CVM does.

For a verifier's nonce and the guest's TEE key (:class:`cvm.crypto.jose.KeyPair`, whose public
JWK the broker wraps secrets to), the guest OS at VMPL1:

1. creates an attestation key in the vTPM (a restricted ECDSA P-256 signing key, primary in the
   endorsement hierarchy, as ``tpm2_createak`` makes it) — once per evidence with
   :func:`produce_evidence`, or once for all with an :class:`AttestationAgent`, which keeps it
   loaded as a long-running agent does;
2. asks its SVSM for an attestation (SVSM 58019 section 7) with
   ``nonce = runtime digest ‖ Name(AK)``; the SVSM adds the vTPM manifest (the EK) and asks the
   PSP for a report with ``REPORT_DATA = SHA-512(nonce ‖ manifest)``;
3. quotes the chosen PCRs with the AK, ``extraData`` = the runtime digest;
4. bundles the report, the VCEK chain the host supplied, the manifest, the AK, the quote and the
   TCG event log the firmware wrote into one ``cvm-evidence/1`` document.

The bindings are :mod:`cvm.formats.kbs.evidence`'s. Nothing here is trusted by the verifier: it
checks every signature and every binding again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cvm.formats.kbs.evidence import CvmEvidence, runtime_digest, svsm_nonce
from cvm.formats.tpm2.constants import TpmAlg, TpmRh
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.formats.tpm2.public import Public
from cvm.guest.tpm.client import TpmClient
from cvm.guest.tpm.svsm_guest import SvsmGuest
from cvm.vtpm.templates import ak_template

DEFAULT_QUOTED_PCRS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 14)


@dataclass(frozen=True)
class Certificates:
    """The VCEK chain (DER) as the host hands it over (extended report or KDS cache)."""

    vcek: bytes
    ask: bytes
    ark: bytes
    crl: bytes | None = None


class VtpmPcrBank:
    """The firmware's measured-boot target: the vTPM through the SVSM (sha256 bank)."""

    banks = ("sha256",)

    def __init__(self, client: TpmClient) -> None:
        self.client = client

    def extend(self, pcr: int, digests_by_bank: Mapping[str, bytes]) -> None:
        self.client.pcr_extend(pcr, {TpmAlg.SHA256: digests_by_bank["sha256"]})

    def read(self, pcr: int, bank: str) -> bytes:
        return self.client.pcr_read(PcrSelectionList.of(bank, [pcr]))[2][0]


def produce_evidence(
    guest: SvsmGuest,
    client: TpmClient,
    nonce: str,
    tee_pubkey: dict[str, Any],
    event_log: bytes,
    certificates: Certificates,
    pcrs: tuple[int, ...] = DEFAULT_QUOTED_PCRS,
) -> CvmEvidence:
    """The evidence for ``nonce`` binding ``tee_pubkey``, from this guest's SVSM and vTPM (an AK
    made for it and flushed after)."""
    ak, ak_public = client.create_primary(TpmRh.ENDORSEMENT, ak_template("ecc"))
    try:
        return _evidence(guest, client, ak, ak_public, nonce, tee_pubkey, event_log,
                         certificates, pcrs)
    finally:
        client.flush(ak)


class AttestationAgent:
    """A guest's long-running attestation agent: one AK, created at its first evidence and kept
    loaded in the vTPM (the EK's hierarchy derives the same key again after a restart)."""

    def __init__(self, guest: SvsmGuest, client: TpmClient, event_log: bytes,
                 certificates: Certificates, pcrs: tuple[int, ...] = DEFAULT_QUOTED_PCRS) -> None:
        self.guest, self.client, self.event_log = guest, client, event_log
        self.certificates, self.pcrs = certificates, pcrs
        self._ak: tuple[int, Public] | None = None

    def evidence(self, nonce: str, tee_pubkey: dict[str, Any]) -> CvmEvidence:
        if self._ak is None:
            self._ak = self.client.create_primary(TpmRh.ENDORSEMENT, ak_template("ecc"))
        ak, ak_public = self._ak
        return _evidence(self.guest, self.client, ak, ak_public, nonce, tee_pubkey,
                         self.event_log, self.certificates, self.pcrs)


def _evidence(guest: SvsmGuest, client: TpmClient, ak: int, ak_public: Public, nonce: str,
              tee_pubkey: dict[str, Any], event_log: bytes, certificates: Certificates,
              pcrs: tuple[int, ...]) -> CvmEvidence:
    digest = runtime_digest(nonce, tee_pubkey)
    report, manifest = guest.attest(svsm_nonce(digest, ak_public.name()))
    attest, signature = client.quote(ak, digest, PcrSelectionList.of("sha256", list(pcrs)))
    return CvmEvidence(
        report=report,
        vcek=certificates.vcek,
        ask=certificates.ask,
        ark=certificates.ark,
        svsm_manifest=manifest,
        ak_public=ak_public.to_bytes(),
        quote_attest=attest,
        quote_signature=signature.to_bytes(),
        event_log=event_log,
        crl=certificates.crl,
    )
