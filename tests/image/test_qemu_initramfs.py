"""The initramfs of a ``--target qemu`` image (`cvm.image.qemu_initramfs`), built without a
boot: its ``/init``, the tools and every library ``ldd`` names, the kernel modules in
dependency order, each folder before what it holds, the gzip stream."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from cvm.errors import ExternalToolError, FormatError
from cvm.formats.cpio import CpioArchive, CpioEntry
from cvm.image import qemu_initramfs
from cvm.image.qemu_initramfs import (
    MODULES,
    TCTI_LIBRARY,
    _with_parents,
    find_tool,
    init_script,
    libraries,
    module_files,
    module_order,
    sealed_initramfs,
)

from ..formats.elf_builder import elf_object


class Files(dict[str, bytes]):
    """A package's files in memory, read through the same two calls as a checked package;
    counts the reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def names(self) -> list[str]:
        return sorted(self)

    def read(self, name: str) -> bytes:
        self.reads.append(name)
        return self[name]


def _module(files: Files, name: str, depends: str | None,
            folder: str = "lib/modules/6.1.0-test/kernel/drivers") -> bytes:
    info = b"license=GPL\0" + (b"" if depends is None else b"depends=" + depends.encode()
                                 + b"\0") + b"vermagic=6.1\0"
    # A string that reads like an entry outside .modinfo is not one.
    files[f"{folder}/{name}.ko"] = elf_object([(".rodata", b"depends=decoy\0"),
                                               (".modinfo", info)])
    return files[f"{folder}/{name}.ko"]


# --- /init -------------------------------------------------------------------------------------

def test_the_init_script_unseals_under_the_sealed_pcrs() -> None:
    script = init_script((4, 7, 11))
    lines = script.splitlines()
    assert lines[0] == "#!/bin/busybox sh"
    assert "@" not in script  # every placeholder filled
    for line in (
        "for i in $(seq 100); do [ -b /dev/vda2 ] && break; sleep 0.1; done",
        "echo CVM-REPORT-BEGIN",
        "cryptsetup token export --token-id 0 /dev/vda2 > token.json",
        "tpm2 createprimary -C o -g sha256 -G ecc256:aes128cfb -a 'fixedtpm|fixedparent|"
        "sensitivedataorigin|userwithauth|restricted|decrypt|noda' -c srk.ctx -Q",
        "for p in 4 7 11; do",
        '  echo "CVM-PCR sha256 $p $(cat /sys/class/tpm/tpm0/pcr-sha256/$p)"',
        "tpm2 policypcr -S session.ctx -l sha256:4,7,11 -Q",
        "  if cryptsetup open --key-file key /dev/vda2 root; then",
        '    echo "CVM-ROOT-OPENED $(head -c 4096 /dev/mapper/root | head -n 1)"',
        "  echo \"CVM-UNSEAL-FAILED $(cat unseal.err | tr '\\n' ' ')\"",
        "echo CVM-DONE",
    ):
        assert line in lines, line
    assert init_script((7,)).count("sha256:7 -Q") == 1
    with pytest.raises(FormatError) as caught:
        init_script(())
    assert str(caught.value) == "the initramfs needs at least one sealed PCR"


# --- tools and libraries -----------------------------------------------------------------------

def test_a_tool_is_found_on_the_path_then_in_the_sbin_folders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sh = shutil.which("sh")
    assert sh is not None and find_tool("sh") == Path(sh)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert find_tool("cryptsetup") == Path("/usr/sbin/cryptsetup")
    with pytest.raises(ExternalToolError) as caught:
        find_tool("cvm-no-such-tool")
    assert str(caught.value) == ("cvm-no-such-tool is not installed (needed to build the "
                                 "initramfs)")


FAKE_LDD = """#!/bin/sh
case "$1" in
  */static) echo "	not a dynamic executable " >&2; exit 1;;
  *) cat "$1";;
esac
"""


@pytest.fixture
def fake_ldd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``ldd`` replaced by a script that prints each "binary"'s own text (or fails)."""
    ldd = tmp_path / "ldd"
    ldd.write_text(FAKE_LDD)
    ldd.chmod(0o755)
    real = qemu_initramfs.find_tool
    monkeypatch.setattr(qemu_initramfs, "find_tool",
                        lambda name: ldd if name == "ldd" else real(name))
    return tmp_path


def test_libraries_are_the_paths_ldd_resolves(fake_ldd: Path) -> None:
    one, two = fake_ldd / "one", fake_ldd / "two"
    one.write_text("\tlinux-vdso.so.1 (0x00007ffd5a1f0000)\n"
                   "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0000000000)\n"
                   "\t/lib64/ld-linux-x86-64.so.2 (0x00007f0000100000)\n")
    two.write_text("\tlibcryptsetup.so.12 => /lib/x86_64-linux-gnu/libcryptsetup.so.12 "
                   "(0x00007f0000200000)\n"
                   "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0000000000)\n"
                   "\tstatically linked\n")
    assert libraries([one, two]) == {
        Path("/lib/x86_64-linux-gnu/libc.so.6"), Path("/lib64/ld-linux-x86-64.so.2"),
        Path("/lib/x86_64-linux-gnu/libcryptsetup.so.12")}
    assert libraries([]) == set()


def test_a_binary_ldd_refuses_or_a_library_it_cannot_find_is_an_error(fake_ldd: Path) -> None:
    static = fake_ldd / "static"
    static.write_text("")
    with pytest.raises(ExternalToolError) as caught:
        libraries([static])
    assert str(caught.value) == f"ldd {static}: not a dynamic executable"
    missing = fake_ldd / "missing"
    missing.write_text("\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0000000000)\n"
                       "\tlibtss2-gone.so.0 => not found\n")
    with pytest.raises(ExternalToolError) as caught:
        libraries([missing])
    assert str(caught.value) == f"ldd {missing}: libtss2-gone.so.0 is not found"


def test_the_real_ldd_resolves_the_real_cryptsetup() -> None:
    found = libraries([find_tool("cryptsetup")])
    assert any(p.name.startswith("libcryptsetup.so") for p in found)
    assert any(p.name == "ld-linux-x86-64.so.2" for p in found)
    assert all(p.is_absolute() and p.exists() for p in found)


# --- kernel modules ----------------------------------------------------------------------------

def test_a_modules_files_are_those_under_lib_modules_any_version_kernel() -> None:
    files = Files()
    for path in ("lib/modules/6.1/kernel/a.ko", "lib/modules/6.1/kernel/x/y/a.ko",
                 "lib/modules/6.1/extra/a.ko", "lib/modules/6.1/a.ko", "lib/modules/kernel/a.ko",
                 "usr/lib/modules/6.1/kernel/a.ko", "lib/firmware/6.1/kernel/a.ko",
                 "lib/modules/6.1/kernel/ab.ko", "lib/modules/6.1/kernel/a.ko.xz"):
        files[path] = b""
    assert module_files(files, "a") == ["lib/modules/6.1/kernel/a.ko",
                                        "lib/modules/6.1/kernel/x/y/a.ko"]


def test_modules_come_after_what_they_depend_on_each_read_once() -> None:
    files = Files()
    a = _module(files, "a", "b,,c")
    _module(files, "b", "c")
    _module(files, "c", "", "lib/modules/6.1.0-test/kernel")
    _module(files, "d", "")
    for elsewhere in ("lib/modules/6.1.0-test/extra", "lib/modules/6.1.0-test", "usr/kernel/x/y"):
        _module(files, "e", "", elsewhere)  # only lib/modules/*/kernel/** counts
    order = module_order(files, ("a", "d", "b"))
    assert [name for name, _ in order] == ["c", "b", "a", "d"]
    assert order[2] == ("a", a)
    assert sorted(files.reads) == sorted(set(files.reads))  # c is wanted twice, read once
    with pytest.raises(FormatError) as caught:
        module_order(files, ("e",))
    assert str(caught.value) == ("kernel module e: 0 files in the kernel's package under "
                                 "lib/modules/*/kernel, expected one")
    files["lib/modules/6.1.0-test/kernel/other/c.ko"] = b"depends=\0"
    with pytest.raises(FormatError, match=r"^kernel module c: 2 files in"):
        module_order(files, ("c",))


def test_the_default_modules_are_those_the_root_needs() -> None:
    assert MODULES == ("virtio_pci", "virtio_blk", "dm-crypt", "ecb", "xts")
    files = _kernel()
    assert [name for name, _ in module_order(files)] == [
        "virtio", "virtio_ring", "virtio_pci", "virtio_blk", "dm-mod", "dm-crypt", "ecb", "xts"]


@pytest.mark.parametrize(("modules", "message"), [
    ({"a": "b"}, "kernel module b: 0 files in the kernel's package under lib/modules/*/kernel, "
                 "expected one"),
    ({"a": "b", "b": "a"}, "kernel module a: circular dependency a -> b"),
    ({"a": "b", "b": "c", "c": "b"}, "kernel module b: circular dependency a -> b -> c"),
    ({"a": None}, "lib/modules/6.1.0-test/kernel/drivers/a.ko: 0 depends= in its .modinfo, "
                  "expected one"),
    ({"a": "b\0depends=c"}, "lib/modules/6.1.0-test/kernel/drivers/a.ko: 2 depends= in its "
                             ".modinfo, expected one"),
])
def test_a_module_tree_that_cannot_load_is_refused(modules: dict[str, str | None],
                                                   message: str) -> None:
    files = Files()
    for name, depends in modules.items():
        _module(files, name, depends)
    with pytest.raises(FormatError) as caught:
        module_order(files, ("a",))
    assert str(caught.value) == message


# --- the archive -------------------------------------------------------------------------------

def _kernel() -> Files:
    files = Files()
    for name, depends in (("virtio", ""), ("virtio_ring", "virtio"),
                          ("virtio_pci", "virtio,virtio_ring"),
                          ("virtio_blk", "virtio,virtio_ring"), ("dm-mod", ""),
                          ("dm-crypt", "dm-mod"), ("ecb", ""), ("xts", "")):
        _module(files, name, depends)
    return files


def test_folders_come_before_what_they_hold_once_each() -> None:
    files = {
        "a/b/c": CpioEntry.file("a/b/c", b"1"),
        "a/d": CpioEntry.file("a/d", b"2"),
        "e": CpioEntry.file("e", b"3"),
        "a": CpioEntry.directory("a", 0o700),  # a folder named by hand and by its files
    }
    assert _with_parents(files) == [
        CpioEntry.directory("a"), CpioEntry.directory("a/b"), files["a/b/c"], files["a/d"],
        files["e"]]


def test_the_archive_holds_init_the_tools_their_libraries_and_the_modules() -> None:
    kernel = _kernel()
    data = sealed_initramfs(b"busybox bytes", kernel, (4, 7, 8, 9))
    assert data[:4] == b"\x1f\x8b\x08\x00" and data[4:8] == bytes(4)  # no name, mtime 0
    assert data[8] == 4  # XFL: the fastest level
    archive = CpioArchive.parse(gzip.decompress(data))
    entries = {e.name: e for e in archive.entries}
    assert len(entries) == len(archive.entries)

    def file(name: str, content: bytes, mode: int = 0o100755) -> None:
        assert (entries[name].mode, entries[name].data) == (mode, content), name

    file("init", init_script((4, 7, 8, 9)).encode())
    file("bin/busybox", b"busybox bytes")
    file("usr/bin/tpm2", find_tool("tpm2").read_bytes())
    file("usr/sbin/cryptsetup", find_tool("cryptsetup").read_bytes())
    wanted = libraries([find_tool("tpm2"), find_tool("cryptsetup"), TCTI_LIBRARY])
    for library in wanted | {TCTI_LIBRARY}:
        file(str(library).lstrip("/"), library.read_bytes())
    order = [name for name, _ in module_order(_kernel())]
    file("modules/order", " ".join(order).encode(), 0o100644)
    for name, content in module_order(_kernel()):
        file(f"modules/{name}.ko", content, 0o100644)
    folders = {n for n, e in entries.items() if e.mode == 0o040755}
    names = [e.name for e in archive.entries]
    for index, name in enumerate(names):  # a folder before what it holds
        parent = name.rpartition("/")[0]
        assert not parent or parent in names[:index], name
    files = {n for n in entries if n not in folders}
    expected = {"init", "bin/busybox", "usr/bin/tpm2", "usr/sbin/cryptsetup", "modules/order",
                *(f"modules/{n}.ko" for n in order),
                *(str(p).lstrip("/") for p in wanted | {TCTI_LIBRARY})}
    assert files == expected
    parents = {"/".join(n.split("/")[:depth]) for n in expected
               for depth in range(1, n.count("/") + 1)}
    assert folders == parents | {"proc", "sys", "dev", "tmp", "run"}
    assert {"bin", "usr", "usr/bin", "usr/sbin", "modules"} <= folders


def test_without_the_device_tcti_there_is_no_initramfs(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    monkeypatch.setattr(qemu_initramfs, "TCTI_LIBRARY", tmp_path / "libtss2-tcti-device.so.0")
    with pytest.raises(ExternalToolError) as caught:
        sealed_initramfs(b"", _kernel(), (4,))
    assert str(caught.value) == (f"{tmp_path / 'libtss2-tcti-device.so.0'} is missing (package "
                                 "libtss2-tcti-device0)")


def test_a_module_that_is_not_an_elf_object_is_refused() -> None:
    files = Files()
    files["lib/modules/6.1.0-test/kernel/drivers/a.ko"] = b"depends=\0"
    with pytest.raises(FormatError) as caught:
        module_order(files, ("a",))
    assert str(caught.value) == ("lib/modules/6.1.0-test/kernel/drivers/a.ko: not an ELF "
                                 "object")
