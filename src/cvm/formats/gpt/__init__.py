"""GUID Partition Table (UEFI Specification 2.10, chapter 5): bytes only, 512-byte LBAs.

- :mod:`~cvm.formats.gpt.protective_mbr`: LBA 0 (section 5.2.3, table 5-4).
- :mod:`~cvm.formats.gpt.header`: the GPT header (section 5.3.2, table 5-5).
- :mod:`~cvm.formats.gpt.partition_entry`: one partition entry (section 5.3.3, table 5-6).
- :mod:`~cvm.formats.gpt.partition_types`: type GUIDs (UEFI table 5-7; the UAPI Discoverable
  Partitions Specification for Linux roots).
- :mod:`~cvm.formats.gpt.partition_table`: the whole table (both headers, both entry arrays),
  built from a list of partitions or parsed and checked from an image.
"""
