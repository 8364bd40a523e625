"""The guest kernel's SEV code: the ``#VC`` handler and GHCB protocol, the ``sev-guest`` driver."""
