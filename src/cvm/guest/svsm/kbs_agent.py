"""The SVSM's attestation agent: it obtains the vTPM state key from a key broker at boot.

At start, at VMPL0, before the vTPM runs (the path :mod:`.key_release` opens for an in-process
relying party, here over Trustee's RCAR protocol, ``kbs_attestation_protocol.md``):

1. the agent derives a P-256 TEE key from the CPU's randomness and keeps the private scalar in
   the SVSM's key page (it never leaves guest pages; the public key goes out as a JWK);
2. ``POST /kbs/v0/auth`` (``{"version", "tee": "snp"}``) -> a nonce and a session cookie;
3. an SNP report at VMPL0 from the PSP over VMPCK0 with ``REPORT_DATA = SHA-384(runtime data
   {"nonce", "tee-pubkey"}) ‖ 0^16`` (:func:`cvm.formats.kbs.launch_evidence
   .launch_report_data`), sent with the VCEK chain the host supplies as
   ``cvm-launch-evidence/1`` in ``POST /kbs/v0/attest``;
4. ``GET /kbs/v0/resource/<repository>/vtpm/<tag>`` -> a JWE to the TEE key, opened with the
   scalar read back from the key page; its plaintext is a key release
   (:class:`cvm.formats.kbs.vtpm_counter.KeyRelease`: the state key, the broker's rollback
   counter, the resource path, which must be the one asked for); the 32-byte state key is
   written into the key page, the counter handed to the SVSM's :class:`.kbs_counter.KbsCounter`
   (``counter``), and the scalar wiped.

The HTTP exchange goes through the host (:class:`.relay_http.RelayHttp`), which sees the
requests and answers but not the key. A refusal at any step raises and the vTPM state never
opens: the broker's denial is a PolicyError carrying the generic sentence the broker gives a
requester (its audit log has the findings).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cvm.crypto.jose import KeyPair
from cvm.crypto.tpm_keys import ecc_from_seed, ecc_point
from cvm.errors import FormatError, IntegrityError, PolicyError, StatusError, UsageError
from cvm.formats.kbs.json_fields import b64url_encode
from cvm.formats.kbs.launch_evidence import LaunchEvidence, launch_report_data
from cvm.formats.kbs.rcar import Attestation
from cvm.formats.kbs.vtpm_counter import KeyRelease
from cvm.guest.kernel.guest_request import GuestRequester
from cvm.guest.svsm.kbs_counter import KbsCounter
from cvm.guest.svsm.relay_http import Exchange, RelayHttp
from cvm.hardware.vcpu import Vcpu

PROTOCOL_VERSION = "0.4.0"
TEE = "snp"
CURVE, JWK_CURVE = "p256", "P-256"
SCALAR_OFFSET = 0x100  # in the SVSM's key page, after the state key
SCALAR_SIZE = 32
STATE_KEY_SIZE = 32
DEFAULT_RESOURCE = "default/vtpm/state-key"
Chain = tuple[bytes, bytes, bytes]


def _jwk(point: tuple[bytes, bytes], scalar: bytes | None = None) -> dict[str, str]:
    jwk = {"kty": "EC", "crv": JWK_CURVE, "x": b64url_encode(point[0]),
           "y": b64url_encode(point[1])}
    if scalar is not None:
        jwk["d"] = b64url_encode(scalar)
    return jwk


@dataclass
class KbsAgent:
    """Where the broker is (``url``, reached through the host's ``exchange``), which resource
    holds the state key, the rollback counter its release feeds, and the host's supplier of
    the VCEK chain for a report (``certificates(report) -> (vcek, ask, ark)``, DER, as an
    extended report returns it)."""

    url: str
    exchange: Exchange
    certificates: Callable[[bytes], Chain]
    resource: str = DEFAULT_RESOURCE
    counter: KbsCounter | None = None

    def obtain_state_key(self, vcpu: Vcpu, requester: GuestRequester, key_gpa: int,
                         random: Callable[[int], bytes]) -> None:
        """Attest to the broker and leave the state key at ``key_gpa`` (VMPL0)."""
        scalar_gpa = key_gpa + SCALAR_OFFSET
        vcpu.write(scalar_gpa, ecc_from_seed(CURVE, random(SCALAR_SIZE), b"svsm kbs tee key"))
        try:
            public = _jwk(ecc_point(CURVE, vcpu.read(scalar_gpa, SCALAR_SIZE)))
            http = RelayHttp(self.url, self.exchange)
            nonce = self._challenge(http)
            response = requester.report(launch_report_data(nonce, public), 0)
            if response.status:
                raise StatusError(f"MSG_REPORT_REQ failed with status {response.status:#x}",
                                  response.status)
            vcek, ask, ark = self.certificates(response.report)
            evidence = LaunchEvidence(response.report, vcek, ask, ark)
            self._call(http, "POST", "/kbs/v0/attest",
                       Attestation(nonce, public, evidence).to_json())
            jwe = self._call(http, "GET", f"/kbs/v0/resource/{self.resource}")
            scalar = vcpu.read(scalar_gpa, SCALAR_SIZE)
            release = KeyRelease.from_bytes(
                KeyPair.from_private_jwk(_jwk(ecc_point(CURVE, scalar), scalar)).decrypt(jwe))
            if release.path != self.resource:
                raise IntegrityError(f"the broker released the key of {release.path[:80]!r}, "
                                     f"not of {self.resource!r}")
            vcpu.write(key_gpa, release.key)
            if self.counter is not None:
                self.counter.released(release.counter,
                                      lambda: vcpu.read(key_gpa, STATE_KEY_SIZE), random)
        finally:
            vcpu.write(scalar_gpa, bytes(SCALAR_SIZE))

    def _challenge(self, http: RelayHttp) -> str:
        challenge = self._call(http, "POST", "/kbs/v0/auth",
                               {"version": PROTOCOL_VERSION, "tee": TEE, "extra-params": ""})
        nonce = challenge.get("nonce")
        if not isinstance(nonce, str) or not nonce:
            raise FormatError("the broker's challenge has no nonce")
        return nonce

    def _call(self, http: RelayHttp, method: str, path: str,
              body: dict[str, Any] | None = None) -> dict[str, Any]:
        status, document = http.request(method, path, body)
        if status >= 400:
            kind = str(document.get("type", "")).rsplit("/", 1)[-1]
            detail = str(document.get("detail", ""))[:200]
            message = f"the key broker refused {method} {path} ({status} {kind}: {detail})"
            if status in (401, 403):
                raise PolicyError(message)
            raise UsageError(message)
        if status != 200:
            raise FormatError(f"the key broker answered {method} {path} with {status}")
        return document
