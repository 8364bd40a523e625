"""Partition type GUIDs cvm writes and names.

UEFI Specification 2.10, section 5.3.3, table 5-7 (EFI System Partition); UAPI Group
"Discoverable Partitions Specification" (``specs/discoverable_partitions_specification.md``):
the x86-64 root (which may hold LUKS2, then unlocked as ``/dev/mapper/root``), root verity,
``/usr``, XBOOTLDR and the generic Linux data type. ``sgdisk`` type codes are noted for users.
"""

from __future__ import annotations

from cvm.wire import Guid

UNUSED = Guid.parse("00000000-0000-0000-0000-000000000000")
ESP = Guid.parse("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
ROOT_X86_64 = Guid.parse("4f68bce3-e8cd-4db1-96e7-fbcaf984b709")
ROOT_VERITY_X86_64 = Guid.parse("2c7357ed-ebd2-46d9-aec1-23d437ec2bf5")
USR_X86_64 = Guid.parse("8484680c-9521-48c6-9c11-b0720656f69e")
XBOOTLDR = Guid.parse("bc13c2ff-59e6-4262-a352-b275fd6f7172")
LINUX_DATA = Guid.parse("0fc63daf-8483-4772-8e79-3d69d8477de4")

NAMES: dict[Guid, str] = {
    ESP: "EFI System (EF00)",
    ROOT_X86_64: "Linux root x86-64 (8304)",
    ROOT_VERITY_X86_64: "Linux root verity x86-64",
    USR_X86_64: "Linux /usr x86-64",
    XBOOTLDR: "Linux extended boot (XBOOTLDR)",
    LINUX_DATA: "Linux filesystem (8300)",
}


def type_name(guid: Guid) -> str:
    """A readable name for a type GUID, or the GUID itself."""
    return NAMES.get(guid, str(guid))
