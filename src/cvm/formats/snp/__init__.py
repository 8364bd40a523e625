"""AMD SEV-SNP wire formats (SEV Secure Nested Paging Firmware ABI, AMD 56860)."""
