"""The files of an EFI System Partition as the boot stages see them.

FAT is case-insensitive and UEFI writes paths with backslashes (UEFI 2.10 section 13.3,
EFI_FILE_PROTOCOL.Open), GRUB with forward slashes; :class:`EspFiles` accepts both and
looks names up without regard to case, so ``\\EFI\\BOOT\\BOOTX64.EFI`` and
``/efi/boot/bootx64.efi`` are the same file.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from cvm.errors import StateError, UsageError


def normalise(path: str) -> str:
    """``/a/b`` form, lower case, no duplicate or trailing separators."""
    parts = [p for p in path.replace("\\", "/").split("/") if p and p != "."]
    if ".." in parts:
        raise UsageError(f"ESP path {path!r} must not contain '..'")
    return "/" + "/".join(parts).lower()


class EspFiles(Mapping[str, bytes]):
    """A read-only, case-insensitive view of ESP files keyed by path."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        self._names: dict[str, str] = {}
        self._files: dict[str, bytes] = {}
        for path, data in files.items():
            key = normalise(path)
            if key in self._files:
                raise UsageError(f"ESP path {path!r} given twice (names are case-insensitive)")
            self._names[key] = "/" + path.replace("\\", "/").strip("/")
            self._files[key] = bytes(data)

    @classmethod
    def from_directory(cls, root: Path) -> EspFiles:
        """Every regular file below ``root`` (an unpacked ESP)."""
        if not root.is_dir():
            raise UsageError(f"ESP directory {root} does not exist")
        files = {
            "/" + p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()
        }
        return cls(files)

    def __getitem__(self, path: str) -> bytes:
        return self._files[normalise(path)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names[k] for k in self._files)

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and normalise(path) in self._files

    def is_directory(self, path: str) -> bool:
        """True when some file lies below ``path``."""
        prefix = normalise(path).rstrip("/") + "/"
        return any(k.startswith(prefix) for k in self._files)

    def read(self, path: str, reader: str = "the boot chain") -> bytes:
        """The file at ``path``; a StateError naming ``reader`` when it is missing."""
        try:
            return self[path]
        except KeyError:
            raise StateError(f"{reader}: file {path} not found on the ESP") from None
