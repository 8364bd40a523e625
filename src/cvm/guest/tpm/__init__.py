"""The guest OS's TPM side: the TPM 2.0 client, sealing, ``systemd-tpm2`` LUKS2 tokens."""
