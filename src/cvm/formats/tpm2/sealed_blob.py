"""A sealed object as tools store it: ``TPM2B_PRIVATE ‖ TPM2B_PUBLIC``.

This is the ``tpm2-blob`` of systemd-cryptenroll's ``systemd-tpm2`` LUKS2 token (systemd
``src/shared/tpm2-util.c``, ``tpm2_make_luks2_json``: the marshalled TPM2B_PRIVATE followed by
the marshalled TPM2B_PUBLIC, base64 in the token) and the concatenation of ``tpm2_create -r``
and ``-u`` outputs. Structures: TCG "TPM 2.0 Library, Part 2", revision 1.59, Tables 222 and
227.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvm.formats.tpm2.public import Public
from cvm.formats.tpm2.sensitive import PrivateBlob
from cvm.formats.tpm2.tpm2b import reader


@dataclass(frozen=True)
class SealedBlob:
    """The private and public halves of a sealed data object."""

    private: PrivateBlob
    public: Public

    @classmethod
    def from_bytes(cls, data: bytes) -> SealedBlob:
        source = reader(data, "TPM2B_PRIVATE ‖ TPM2B_PUBLIC")
        private = PrivateBlob.read_tpm2b(source)
        public = Public.read_tpm2b(source)
        source.expect_end()
        return cls(private, public)

    def to_bytes(self) -> bytes:
        return self.private.to_tpm2b() + self.public.to_tpm2b()
