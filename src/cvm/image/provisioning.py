"""The owner's side of provisioning: the vTPM state key, wrapped under the provisioning key,
released only to an SVSM whose attestation report matches the image's reference values.

At rest (``owner/vtpm-state-key.wrapped``, cvm's own envelope, little-endian)::

    0x00  8   magic "CVMSKEY1"
    0x08  12  AES-GCM IV
    0x14  16  AES-GCM tag
    0x24  32  the state key, encrypted (AES-256-GCM under the provisioning key; AAD = magic)

At boot (docs/image-bundle.md, "How the SVSM gets the state key"): the relying party issues a
one-time nonce; the SVSM binds it and an ephemeral P-384 public key into REPORT_DATA
(:func:`cvm.crypto.key_transport.report_data`); :meth:`RelyingParty.release` appraises the
evidence with :class:`cvm.attestation.verifier.appraisal.Verifier` — chain to the trusted AMD
root, signature, then MEASUREMENT (the predicted SVSM launch digest for the vCPU count), VMPL 0,
no debug, REPORT_DATA — and returns the state key wrapped to that public key
(:func:`cvm.crypto.key_transport.wrap`). Anything else gets an error and no key: a replayed or
unknown nonce (PolicyError), an unacceptable report (PolicyError with its findings), an
inauthentic one (ChainError, SignatureError).

This is the owner's code (``cvm.host`` never imports it); the runner hands :meth:`release` to
the SVSM as a callable. A key broker service replaces it later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cvm.attestation.verifier.appraisal import Evidence, Verifier
from cvm.attestation.verifier.trust import TrustRoots
from cvm.crypto import aead
from cvm.crypto.key_transport import report_data, wrap
from cvm.errors import Finding, FormatError, PolicyError, UsageError
from cvm.formats.snp.attestation_report import AttestationReport
from cvm.image.reference_values import ImageReferenceValues, loads
from cvm.wire import Layout, raw

OWNER_REFERENCE = "reference-values.json"  # in owner/: the copy the owner appraises with

STATE_KEY_MAGIC = b"CVMSKEY1"
STATE_KEY_SIZE = 32
WRAPPED_SIZE = 0x44
WRAPPED_LAYOUT = Layout("wrapped state key", WRAPPED_SIZE, [
    raw("magic", 0x00, 8), raw("iv", 0x08, 12), raw("tag", 0x14, 16), raw("key", 0x24, 32),
])
NONCE_SIZE = 32
Random = Callable[[int], bytes]


def wrap_state_key(provisioning_key: bytes, state_key: bytes, random: Random) -> bytes:
    """The state key encrypted under the provisioning key (``vtpm-state-key.wrapped``)."""
    if len(state_key) != STATE_KEY_SIZE:
        raise UsageError(f"a vTPM state key is {STATE_KEY_SIZE} bytes")
    iv = random(aead.IV_SIZE)
    ciphertext, tag = aead.encrypt(provisioning_key, iv, state_key, STATE_KEY_MAGIC)
    return WRAPPED_LAYOUT.pack({"magic": STATE_KEY_MAGIC, "iv": iv, "tag": tag,
                                "key": ciphertext})


def unwrap_state_key(provisioning_key: bytes, wrapped: bytes) -> bytes:
    """Open ``vtpm-state-key.wrapped``; FormatError or IntegrityError if it is not ours."""
    if len(wrapped) != WRAPPED_SIZE:
        raise FormatError(f"wrapped state key: {len(wrapped)} bytes, expected {WRAPPED_SIZE}")
    fields = WRAPPED_LAYOUT.unpack(wrapped)
    if fields["magic"] != STATE_KEY_MAGIC:
        raise FormatError("wrapped state key: bad magic")
    return aead.decrypt(provisioning_key, bytes(fields["iv"]), bytes(fields["key"]),
                        bytes(fields["tag"]), STATE_KEY_MAGIC)


@dataclass(frozen=True)
class StateKeyRequest:
    """What the SVSM sends: its report and VCEK chain (DER), the nonce, its public point."""

    report: bytes
    vcek: bytes
    ask: bytes
    ark: bytes
    nonce: bytes
    public_x: bytes
    public_y: bytes


def owner_reference(folder: Path, purpose: str) -> ImageReferenceValues:
    """The reference values the owner keeps in ``folder``'s ``owner/`` — not the copy beside
    the image that the host is handed and may edit; UsageError naming the missing file and
    what ``purpose`` needed it."""
    path = Path(folder) / "owner" / OWNER_REFERENCE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{purpose} needs the owner's {path} (a bundle built before the owner "
                         "kept its own copy: build it again)") from None
    return loads(data)


def owner_keys(folder: Path, purpose: str) -> tuple[bytes, bytes]:
    """(provisioning key, wrapped vTPM state key) from the image bundle ``folder``'s ``owner/``;
    UsageError naming the missing file and what ``purpose`` needed it."""
    owner = Path(folder) / "owner"
    try:
        return ((owner / "provisioning.key").read_bytes(),
                (owner / "vtpm-state-key.wrapped").read_bytes())
    except FileNotFoundError as missing:
        raise UsageError(f"{purpose} needs the owner's {missing.filename}") from None


class RelyingParty:
    """Releases one image's vTPM state key to SVSMs that attest as that image."""

    def __init__(self, reference: ImageReferenceValues, roots: TrustRoots,
                 provisioning_key: bytes, wrapped_state_key: bytes, random: Random,
                 verifier: Verifier | None = None) -> None:
        self.reference = reference
        self.verifier = verifier or Verifier(roots)
        self.random = random
        self._provisioning_key = provisioning_key
        self._wrapped = wrapped_state_key
        self._nonces: set[bytes] = set()
        self.released = 0
        self.refused: list[str] = []

    def challenge(self) -> bytes:
        """A fresh nonce, valid for one :meth:`release`."""
        nonce = self.random(NONCE_SIZE)
        self._nonces.add(nonce)
        return nonce

    def release(self, request: StateKeyRequest) -> bytes:
        """Appraise ``request``; return the state key wrapped to its public key, or raise."""
        try:
            return self._release(request)
        except Exception as refused:
            self.refused.append(f"{type(refused).__name__}: {refused}")
            raise

    def _release(self, request: StateKeyRequest) -> bytes:
        if request.nonce not in self._nonces:
            raise PolicyError("state key request: the nonce was not issued or is already used",
                              (Finding("nonce", "one issued by challenge()", "unknown"),))
        self._nonces.discard(request.nonce)
        vcpus = self._vcpus(request.report)
        point = (request.public_x, request.public_y)
        reference = self.reference.snp_reference(vcpus, report_data(request.nonce, point))
        evidence = Evidence(request.report, request.vcek, request.ask, request.ark)
        self.verifier.appraise(evidence, reference)
        state_key = unwrap_state_key(self._provisioning_key, self._wrapped)
        self.released += 1
        return wrap(point, state_key, self.random)

    def _vcpus(self, report: bytes) -> int:
        """The vCPU count the report's measurement is checked against: each predicted count
        is tried (the count is part of the measurement, so only a predicted one can match)."""
        measurement = AttestationReport.from_bytes(report).measurement
        for entry in self.reference.launch:
            if entry.mode == "sev-snp" and entry.digest == measurement:
                return entry.vcpus
        predicted = [e.vcpus for e in self.reference.launch if e.mode == "sev-snp"]
        if not predicted:
            raise UsageError("the reference values predict no sev-snp launch")
        return predicted[0]
