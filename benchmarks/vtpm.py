"""vTPM throughput: PCR_Extend commands, a policy-session unseal, the state envelope.

Usage: ``python benchmarks/vtpm.py [--json] [--seconds 1]``

Baselines, measured in the same process:

* extend: 1,000 TPM2_PCR_Extend command buffers through :meth:`Tpm.execute` (marshalling,
  authorization with a password session, the bank update) against the bare ``hashlib`` SHA-256
  of ``PCR || digest`` 1,000 times;
* unseal: one full systemd-style unseal (CreatePrimary of the ECC SRK, Load, policy session,
  PolicyPCR + PolicyAuthValue, Unseal with the session HMAC, flushes) against one ECC P-256
  key derivation plus one AES-CFB decryption through ``cryptography`` (the cryptographic floor);
* state: sealing + opening the AES-256-GCM state envelope of a populated state against a bare
  AES-256-GCM encrypt + decrypt of the same bytes;
* volatile: the SVSM's load and store of a volatile state holding what an unseal loads (the
  SRK, the sealed object, a policy session) and the three PCR banks — ``VolatileState``'s
  struct runs, with the public-area memo and the kept encodings — against the field-by-field
  reader and checking writer on the same bytes (each area parsed and encoded afresh);
* svsm: 100 PCR_Extend commands from the guest OS at VMPL1 through the SVSM call protocol
  (request page, VMPL switch, state reloaded from and written back to the encrypted VMPL0
  pages) against the same 100 commands straight into :meth:`Tpm.execute`.

Goal: a measured boot's ~100 extends in well under a second; unseal under 50 ms.
"""

from __future__ import annotations

import hashlib
import os

from cvm.amd.kds import ChipFuses
from cvm.crypto import aead
from cvm.crypto.tpm_kdf import aes_cfb_decrypt
from cvm.crypto.tpm_keys import ecc_from_seed, ecc_point
from cvm.formats.ovmf.image import build_image
from cvm.formats.ovmf.sev_metadata import MetadataSection, SectionType
from cvm.formats.tpm2.constants import TpmAlg, TpmRh, TpmSe
from cvm.formats.tpm2.pcr_selection import PcrSelectionList
from cvm.guest.svsm.svsm import Svsm
from cvm.guest.tpm.client import Auth, TpmClient
from cvm.guest.tpm.seal import pin_auth_value
from cvm.guest.tpm.svsm_guest import SvsmGuest
from cvm.hardware.machine import Machine
from cvm.hardware.psp.firmware import SecureProcessor
from cvm.host.launch import GuestRequestRelay, SnpLaunchConfig, launch_snp
from cvm.host.vmm import Hypervisor
from cvm.vtpm.engine import Tpm
from cvm.vtpm.policy import PolicyDigest
from cvm.vtpm.state_file import MonotonicCounter, ReleasedKeyProvider, open_state, seal_state
from cvm.vtpm.templates import sealed_template, srk_template
from cvm.vtpm.volatile import VolatileState
from timing import argument_parser, median, print_figures

EXTENDS = 1000


def _svsm_client() -> TpmClient:
    """A launched SEV-SNP guest whose OS (VMPL1) reaches the vTPM through the SVSM."""
    machine = Machine(8 << 30)
    hv = Hypervisor(machine)
    psp = SecureProcessor(machine, ChipFuses("Milan", bytes(range(64)), b"\x5a" * 64))
    sections = (MetadataSection(0x800000, 0x9000, SectionType.SNP_SEC_MEM),
                MetadataSection(0x80D000, 0x1000, SectionType.SNP_SECRETS),
                MetadataSection(0x80E000, 0x1000, SectionType.CPUID))
    launched = launch_snp(hv, psp, build_image(0x40000, sections=sections), SnpLaunchConfig(),
                          GuestRequestRelay(psp))
    vcpu = launched.guest.vcpus[0]
    vcpu.vmrun()
    assert launched.secrets_gpa is not None
    svsm = Svsm.start(vcpu, launched.secrets_gpa, MonotonicCounter(), os.urandom)
    svsm.grant(0x20000, 2)
    client = TpmClient(SvsmGuest(vcpu, svsm, 0x20000, 0x21000).tpm_execute)
    client.startup()
    return client


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    tpm = Tpm()
    client = TpmClient(tpm.execute)
    client.startup()
    measurement = hashlib.sha256(b"measurement").digest()

    def extends() -> None:
        for _ in range(EXTENDS):
            client.pcr_extend(8, {TpmAlg.SHA256: measurement})

    def bare_extends() -> None:
        value = bytes(32)
        for _ in range(EXTENDS):
            value = hashlib.sha256(value + measurement).digest()

    selection = PcrSelectionList.of("sha256", [7])
    values = client.pcr_read(selection)[2]
    policy = PolicyDigest.start().pcr(selection, values).auth_value().value
    primary, _ = client.create_primary(TpmRh.OWNER, srk_template())
    blob, public = client.create(primary, sealed_template(policy), data=bytes(32),
                                 auth=pin_auth_value(b"1234"))
    client.flush(primary)

    def unseal() -> None:
        srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
        item = client.load(srk, blob, public)
        session = client.start_auth_session(TpmSe.POLICY)
        client.policy_pcr(session, selection)
        client.policy_auth_value(session)
        client.unseal(item, Auth(pin_auth_value(b"1234"), session))
        for handle in (session.handle, item, srk):
            client.flush(handle)

    def bare_unseal() -> None:
        ecc_point("p256", ecc_from_seed("p256", bytes(32), b"srk"))
        aes_cfb_decrypt(bytes(16), bytes(16), bytes(106))

    state = tpm.state.to_bytes()
    keys = ReleasedKeyProvider(bytes(range(32)))

    def envelope() -> None:
        counter = MonotonicCounter()
        open_state(seal_state(state, keys, counter, bytes), keys, counter)

    def bare_envelope() -> None:
        ciphertext, tag = aead.encrypt(bytes(range(32)), bytes(12), state, b"")
        aead.decrypt(bytes(range(32)), bytes(12), ciphertext, tag, b"")

    srk, _ = client.create_primary(TpmRh.OWNER, srk_template())
    sealed = client.load(srk, blob, public)
    loaded = client.start_auth_session(TpmSe.POLICY)
    client.policy_pcr(loaded, selection)
    volatile = tpm.volatile().to_bytes()
    for handle in (loaded.handle, sealed, srk):
        client.flush(handle)

    def load_store() -> None:
        for _ in range(100):
            VolatileState.from_bytes(volatile).to_bytes()

    def strict_load_store() -> None:
        for _ in range(100):
            VolatileState._from_bytes_checked(volatile)._to_bytes_checked()

    guest_client = _svsm_client()

    def svsm_extends() -> None:
        for _ in range(100):
            guest_client.pcr_extend(8, {TpmAlg.SHA256: measurement})

    def direct_extends() -> None:
        for _ in range(100):
            client.pcr_extend(8, {TpmAlg.SHA256: measurement})

    figures: dict[str, float] = {}
    for name, ours, base in (("extend", extends, bare_extends), ("unseal", unseal, bare_unseal),
                             ("state", envelope, bare_envelope),
                             ("volatile", load_store, strict_load_store),
                             ("svsm", svsm_extends, direct_extends)):
        mine = median(ours, seconds=args.seconds, at_least=5).seconds
        floor = median(base, seconds=args.seconds, at_least=5).seconds
        figures[f"{name}_ms"] = round(mine * 1000, 3)
        figures[f"{name}_baseline_ms"] = round(floor * 1000, 3)
        figures[f"{name}_ratio"] = round(mine / floor, 1)
    figures["extends_per_s"] = round(EXTENDS / (figures["extend_ms"] / 1000))
    print_figures(figures, as_json=args.json, line="{name:>24}: {value}")


if __name__ == "__main__":
    main()
