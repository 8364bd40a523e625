"""Confidential disks: LUKS2 volumes, the dm-crypt block layer, GPT disks with a clear ESP.

- :mod:`~cvm.disk.volume`: :class:`~cvm.disk.volume.Luks2Volume` (format, unlock, keyslots,
  tokens) — the API the vTPM's ``systemd-tpm2`` token builds on.
- :mod:`~cvm.disk.keyslot`: KDFs, AF split, keyslot areas (a wrong key: WrongKeyError, exit 2).
- :mod:`~cvm.disk.header_store`: crash-safe writes of the two header copies, recovery.
- :mod:`~cvm.disk.dm_crypt`: :class:`~cvm.disk.dm_crypt.CryptDevice`, plaintext at any offset.
- :mod:`~cvm.disk.storage`: the injectable byte storage (files, partition windows).
- :mod:`~cvm.disk.conversion`: whole images in and out of LUKS2.
- :mod:`~cvm.disk.esp` (with the mtools runner), :mod:`~cvm.disk.disk_image`: the ESP and
  ``cvm disk build``.
- :mod:`~cvm.disk.dump`: ``luksDump``'s text and JSON, as cryptsetup prints them.
- :mod:`~cvm.disk.file_store` (header: :mod:`~cvm.disk.file_store_header`, compaction's plan:
  :mod:`~cvm.disk.file_store_compaction`): the workload's files on the encrypted root.
"""
