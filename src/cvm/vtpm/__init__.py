"""The vTPM: a TPM 2.0 (TCG TPM 2.0 Library, revision 1.59) over command/response buffers.

:class:`cvm.vtpm.engine.Tpm` executes commands (password, HMAC, policy and trial sessions,
salted sessions with AES-CFB parameter encryption); :mod:`cvm.guest.tpm.client` builds them;
:mod:`cvm.vtpm.policy` computes policy digests offline; :mod:`cvm.vtpm.state` and
:mod:`cvm.vtpm.volatile` serialise its state; :mod:`cvm.guest.svsm.svsm` hosts it at VMPL0 inside
an SEV-SNP guest with its state sealed at rest by :mod:`cvm.vtpm.state_file`; the ``cvm``
command seals the state of the vTPMs it runs under the user's keys with
:mod:`cvm.vtpm.state_store`;
:mod:`cvm.vtpm.mssim_server` serves it to real tools (tpm2-tools, systemd-cryptenroll);
:mod:`cvm.guest.tpm.seal` and :mod:`cvm.guest.tpm.luks_token` seal disk keys into ``systemd-tpm2``
LUKS2 tokens.
"""
