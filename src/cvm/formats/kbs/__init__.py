"""The relying party's wire formats: composite evidence, the RCAR payloads, attestation tokens.

Pure formats (JSON <-> frozen dataclasses), no crypto and no actor: the guest produces them,
the verifier and the key broker judge them.
"""
