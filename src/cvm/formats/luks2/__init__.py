"""LUKS2 on-disk format (cryptsetup ``docs/on-disk-format-luks2.pdf`` v1.1.4): bytes only.

- :mod:`~cvm.formats.luks2.binary_header`: the 4096-byte binary header (section 2.1).
- :mod:`~cvm.formats.luks2.metadata`: the JSON area (section 3).
- :mod:`~cvm.formats.luks2.consistency`: how its objects must fit together (cryptsetup's rules).
- :mod:`~cvm.formats.luks2.header_copy`: binary header + JSON area + checksum (section 2).
- :mod:`~cvm.formats.luks2.anti_forensic`: the AF splitter (LUKS1 spec section 2.4).

Volumes, keyslot cryptography and crash-safe writes live in :mod:`cvm.disk`.
"""
