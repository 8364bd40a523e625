"""Everything that runs inside the VM: one side of the trust boundary, beside :mod:`cvm.host`.

:mod:`cvm.guest.kernel` is the Linux ``sev-guest`` driver and the ``#VC``/GHCB code;
:mod:`cvm.guest.svsm` the SVSM at VMPL0 that hosts the vTPM; :mod:`cvm.guest.tpm` the guest
OS's TPM client, sealing and ``systemd-tpm2`` tokens; :mod:`cvm.guest.boot` one module per boot
stage (firmware with Secure Boot and measured boot, shim, GRUB, kernel stub, UKI).
"""
