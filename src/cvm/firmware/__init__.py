"""The guest UEFI model: varstore, Secure Boot, measured boot."""
