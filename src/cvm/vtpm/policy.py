"""Policy digests computed as a TPM's policy session computes them.

TCG "TPM 2.0 Library, Part 3: Commands", revision 1.59, section 23 ("Enhanced Authorization
(EA) Commands"): every TPM2_Policy* command extends the session's ``policyDigest``, which
starts as a zero digest of the session hash (Part 1 section 19.7.2). The update rules:

* PolicyPCR (23.7): ``d = H(d ‖ TPM_CC_PolicyPCR ‖ TPML_PCR_SELECTION ‖ pcrDigest)`` where
  ``pcrDigest = H(selected PCR values in selection order)``;
* PolicyAuthValue (23.17) and PolicyPassword (23.18, which deliberately uses
  TPM_CC_PolicyAuthValue): ``d = H(d ‖ TPM_CC_PolicyAuthValue)``;
* PolicyAuthorize (23.16): ``d = H(H(0 ‖ CC ‖ keySign.Name) ‖ policyRef)`` (reset first);
* PolicyOR (23.6): ``d = H(0 ‖ CC ‖ digest_1 ‖ … ‖ digest_n)`` for 2..8 digests;
* PolicySecret / PolicySigned (23.3/23.4): ``d = H(H(d ‖ CC ‖ Name) ‖ policyRef)``;
* PolicyCommandCode (23.11): ``d = H(d ‖ CC ‖ commandCode)``;
* PolicyAuthorizeNV (23.22): ``d = H(0 ‖ CC ‖ nvIndex.Name)``.

:class:`PolicyDigest` is pure (no TPM state); the vTPM's policy commands and the ``cvm tpm
policy`` CLI both use it, so predicted digests and live sessions cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cvm.errors import UsageError
from cvm.formats.tpm2.constants import TpmAlg, TpmCc, digest, digest_size, hash_alg
from cvm.formats.tpm2.pcr_selection import PcrSelectionList

POLICY_OR_MIN = 2
POLICY_OR_MAX = 8


def _cc(code: int) -> bytes:
    return code.to_bytes(4, "big")


def pcr_digest(alg: int, values: Sequence[bytes]) -> bytes:
    """``H_alg(value_0 ‖ value_1 ‖ …)``: the pcrDigest of PolicyPCR and Quote."""
    return digest(alg, *values)


@dataclass(frozen=True)
class PolicyDigest:
    """An immutable policy digest; each method returns the digest after one more command."""

    hash_alg: int
    value: bytes

    @classmethod
    def start(cls, alg: int | str = TpmAlg.SHA256) -> PolicyDigest:
        algorithm = hash_alg(alg) if isinstance(alg, str) else alg
        return cls(algorithm, bytes(digest_size(algorithm)))

    def _update(self, *parts: bytes) -> PolicyDigest:
        return PolicyDigest(self.hash_alg, digest(self.hash_alg, self.value, *parts))

    def _zero(self) -> PolicyDigest:
        return PolicyDigest(self.hash_alg, bytes(len(self.value)))

    def pcr(self, selection: PcrSelectionList, values: Sequence[bytes]) -> PolicyDigest:
        """PolicyPCR with the PCR values (selection order) the policy expects."""
        if len(values) != len(selection.items()):
            raise UsageError(
                f"PolicyPCR: {len(selection.items())} PCRs selected but {len(values)} values given"
            )
        for (bank, pcr), value in zip(selection.items(), values, strict=True):
            if len(value) != digest_size(bank):
                raise UsageError(f"PolicyPCR: value for PCR {pcr} has the wrong size")
        return self.pcr_digest(selection, pcr_digest(self.hash_alg, values))

    def pcr_digest(self, selection: PcrSelectionList, pcr_digest_value: bytes) -> PolicyDigest:
        """PolicyPCR with an already computed pcrDigest."""
        return self._update(_cc(TpmCc.POLICY_PCR), selection.to_bytes(), pcr_digest_value)

    def auth_value(self) -> PolicyDigest:
        return self._update(_cc(TpmCc.POLICY_AUTH_VALUE))

    def password(self) -> PolicyDigest:
        """PolicyPassword: the same digest update as PolicyAuthValue (Part 3 23.18)."""
        return self._update(_cc(TpmCc.POLICY_AUTH_VALUE))

    def command_code(self, code: int) -> PolicyDigest:
        return self._update(_cc(TpmCc.POLICY_COMMAND_CODE), _cc(code))

    def authorize(self, key_name: bytes, policy_ref: bytes = b"") -> PolicyDigest:
        inner = self._zero()._update(_cc(TpmCc.POLICY_AUTHORIZE), key_name)
        return inner._update(policy_ref)

    def secret(self, auth_name: bytes, policy_ref: bytes = b"") -> PolicyDigest:
        return self._update(_cc(TpmCc.POLICY_SECRET), auth_name)._update(policy_ref)

    def signed(self, key_name: bytes, policy_ref: bytes = b"") -> PolicyDigest:
        return self._update(_cc(TpmCc.POLICY_SIGNED), key_name)._update(policy_ref)

    def authorize_nv(self, nv_name: bytes) -> PolicyDigest:
        return self._zero()._update(_cc(TpmCc.POLICY_AUTHORIZE_NV), nv_name)

    def or_(self, branches: Sequence[bytes]) -> PolicyDigest:
        """PolicyOR over 2..8 branch digests (the current digest must be one of them)."""
        if not POLICY_OR_MIN <= len(branches) <= POLICY_OR_MAX:
            raise UsageError(f"PolicyOR takes 2 to 8 digests, not {len(branches)}")
        if any(len(branch) != len(self.value) for branch in branches):
            raise UsageError("PolicyOR: every branch must be a digest of the session hash")
        return self._zero()._update(_cc(TpmCc.POLICY_OR), *branches)

    def hex(self) -> str:
        return self.value.hex()


def approved_policy_hash(key_name_alg: int, approved_policy: bytes, policy_ref: bytes) -> bytes:
    """aHash of PolicyAuthorize: ``H_keyNameAlg(approvedPolicy ‖ policyRef)`` (Part 3 23.16)."""
    return digest(key_name_alg, approved_policy, policy_ref)
