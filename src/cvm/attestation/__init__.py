"""The relying party: the verifier (authentic? acceptable?) and the key broker service."""
