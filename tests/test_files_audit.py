"""The rule "a failed write leaves the previous state intact", kept for the code to come.

Every file cvm keeps for a user or the host goes through :mod:`cvm.files` (written beside its
name, then renamed). This test reads the source and finds every other way to write a file —
``write_bytes``, ``write_text``, ``open`` or ``os.fdopen`` for writing, ``os.open`` with a write
flag, a ``FileStorage`` opened for writing, a copy by ``shutil`` — and fails on any that is not in
:data:`ALLOWED` with the reason it may write in place. ``image/`` (the owner's build, which
writes into a staging folder renamed into place whole) and ``host/adversary/`` (the host's
attacks, whose writes are the point) are outside the rule.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "cvm"
OUTSIDE = ("image/", "host/adversary/", "files.py")
WRITE_METHODS = {"write_bytes", "write_text"}
COPIES = {"copy", "copy2", "copyfile", "copytree", "move"}
WRITE_FLAGS = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC"}

# (file under src/cvm, the function that writes, "how target") -> why it may write so
ALLOWED: dict[tuple[str, str, str], str] = {
    ("amd/root_store.py", "RootStore._lock_and_create", "os.open self.directory / '.lock'"):
        "the lock file: it holds no data, only the lock",
    ("vtpm/state_store.py", "Keyring._update", "open lock"):
        "the lock file: it holds no data, only the lock",
    ("disk/storage.py", "FileStorage.__init__", "os.open self.path"):
        "the block layer itself; each use of FileStorage for writing is listed here",
    ("disk/conversion.py", "encrypt_image", "FileStorage new"):
        "the staged new image (files.staged), renamed over the output once whole",
    ("disk/conversion.py", "decrypt_image", "open new"):
        "the staged new plaintext (files.staged), renamed over the output once whole",
    ("disk/disk_image.py", "build_disk", "FileStorage new"):
        "the staged new disk (files.staged), renamed over the output once whole",
    ("disk/esp.py", "_clear_reserved", "open image"):
        "the ESP inside the staged disk that build_disk is writing",
    ("cli/luks.py", "volume_storage", "FileStorage image"):
        "LUKS2 header edits in place (add-key, token ...), as cryptsetup makes them: the "
        "header's two copies and their sequence id keep one of them whole",
    ("cli/luks.py", "format_volume", "FileStorage image"):
        "a new LUKS2 header on the file the user names, in place as cryptsetup luksFormat "
        "writes it: what was there is what the command replaces",
    ("host/vm_run.py", "HostDisk.__init__", "FileStorage path"):
        "the VM's disk: a guest writes its block device in place",
    ("host/qemu.py", "run_image", "shutil.copyfile varstore"):
        "the varstore QEMU runs on, copied into a private scratch folder",
    ("scenarios/lab_files.py", "host_copy", "shutil.copytree into / name"):
        "the host's copy of a bundle, made new in the lab's scratch folder",
    ("scenarios/lab_files.py", "sparse_copy", "open target"):
        "the host's copy of a bundle, made new in the lab's scratch folder",
    ("scenarios/attack_matrix.py", "in_snapshot", "os.fdopen writer"):
        "a pipe to the parent process, not a file",
    ("scenarios/attack_bundles.py", "lab_bundle_stages", "write_bytes old / 'shimx64.efi'"):
        "the lab's old release, made new in its scratch folder",
    ("scenarios/attack_bundles.py", "lab_bundle_stages", "write_bytes old / 'grubx64.efi'"):
        "the lab's old release, made new in its scratch folder",
    ("scenarios/boot_lab.py", "forge_launch_digest", "write_text path"):
        "the host's attack on its own copy of the reference values",
    ("scenarios/boot_lab.py", "BootLab.launch", "write_bytes firmware"):
        "the host's attack on its own copy of the firmware",
    ("cli/demo_kbs.py", "broker_process", "open folder / LOG_FILE"):
        "the broker's log in the demo's scratch folder",
    ("cli/demo_kbs.py", "flip_bit", "write_bytes path"):
        "the host's attack on the firmware in the demo's scratch folder",
}


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return "?"


def _constant(node: ast.expr | None) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _writing_mode(given: ast.expr | None, unknown: bool) -> bool:
    """Whether a mode argument opens for writing; ``unknown`` for a mode that is no literal."""
    if given is None:
        return False  # read, the default
    mode = _constant(given)
    return bool(set(mode) & set("wax+")) if isinstance(mode, str) else unknown


def _target(call: ast.Call) -> str:
    """The file a write goes to, as written in the source."""
    name = _name(call.func)
    if isinstance(call.func, ast.Attribute) and (
            call.func.attr in WRITE_METHODS or call.func.attr == "open") and name != "os.open":
        return ast.unparse(call.func.value)  # path.write_bytes(...), path.open("wb")
    at = 1 if name.startswith("shutil.") else 0  # copy(source, target)
    return ast.unparse(call.args[at]) if len(call.args) > at else "?"


def _writes(call: ast.Call) -> str | None:
    """What ``call`` writes a file with, or None."""
    name = _name(call.func)
    method = name.rsplit(".", 1)[-1]
    if method in WRITE_METHODS:
        return method
    if name in ("open", "os.fdopen"):  # open(file, mode): a mode not written out counts
        given = call.args[1] if len(call.args) > 1 else _keyword(call, "mode")
        return name if _writing_mode(given, unknown=True) else None
    if name == "os.open":
        flags = {n.attr for n in ast.walk(call.args[1])
                 if isinstance(n, ast.Attribute) and n.attr.startswith("O_")}
        return name if flags & WRITE_FLAGS or not flags else None  # flags unseen: counted
    if method == "open":  # Path.open(mode); Luks2Volume.open(storage) and the like are not
        given = call.args[0] if call.args else _keyword(call, "mode")
        return "open" if _writing_mode(given, unknown=False) else None
    if name.startswith("shutil.") and method in COPIES:
        return name
    if method == "FileStorage" and _constant(_keyword(call, "read_only")) is not True:
        return method
    return None


def _calls(node: ast.AST, scope: tuple[str, ...] = ()) -> Iterator[tuple[str, ast.Call]]:
    """Every call under ``node`` with the dotted name of the function or class it is in."""
    for child in ast.iter_child_nodes(node):
        inner = scope
        if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            inner = (*scope, child.name)
        elif isinstance(child, ast.Call):
            yield ".".join(scope) or "<module>", child
        yield from _calls(child, inner)


def raw_writes(root: Path = SRC) -> dict[tuple[str, str, str], list[int]]:
    """Every raw write under ``root`` (outside :data:`OUTSIDE`): key -> its lines."""
    found: dict[tuple[str, str, str], list[int]] = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if relative.startswith(OUTSIDE):
            continue
        for function, call in _calls(ast.parse(path.read_text(), filename=str(path))):
            what = _writes(call)
            if what is not None:
                key = (relative, function, f"{what} {_target(call)}")
                found.setdefault(key, []).append(call.lineno)
    return found


def test_every_file_a_user_or_the_host_keeps_is_written_whole() -> None:
    found = raw_writes()
    unexplained = {f"{key[0]}:{lines[0]} {key[1]}: {key[2]}" for key, lines in found.items()
                   if key not in ALLOWED}
    assert unexplained == set(), ("write these through cvm.files (write_output, "
                                  "write_atomically, staged, write_new), or allow them with a "
                                  "reason")
    stale = set(ALLOWED) - set(found)
    assert stale == set(), "allowed writes that no longer exist: remove them"
    assert all(reason.strip() for reason in ALLOWED.values())


def test_the_scan_sees_each_way_of_writing(tmp_path: Path) -> None:
    (tmp_path / "image").mkdir()
    (tmp_path / "image" / "build.py").write_text("def f(p):\n    p.write_bytes(b'')\n")
    (tmp_path / "writer.py").write_text(
        "import os, shutil\n"
        "class Keeper:\n"
        "    def keep(self, p, fd):\n"
        "        p.write_bytes(b'')\n"
        "        p.write_text('')\n"
        "        open(p, 'wb')\n"
        "        open(p, mode='a')\n"
        "        open(p, self.mode)\n"
        "        p.open('r+b')\n"
        "        os.fdopen(fd, 'w')\n"
        "        os.open(p, os.O_WRONLY | os.O_CREAT)\n"
        "        os.open(p, self.flags | getattr(os, 'O_CLOEXEC', 0))\n"
        "        shutil.copyfile(p, q)\n"
        "        FileStorage(p)\n"
        "        FileStorage(p, create=True)\n"
        "def top(p, fd):\n"
        "    open(p)\n"
        "    open(p, 'rb')\n"
        "    p.open()\n"
        "    p.open('rb')\n"
        "    os.fdopen(fd, 'rb')\n"
        "    os.open(p, os.O_RDONLY)\n"
        "    FileStorage(p, read_only=True)\n"
        "    p.read_bytes()\n"
        "    p.write_bytes(b'')\n")
    found = raw_writes(tmp_path)
    assert found == {
        ("writer.py", "Keeper.keep", "write_bytes p"): [4],
        ("writer.py", "Keeper.keep", "write_text p"): [5],
        ("writer.py", "Keeper.keep", "open p"): [6, 7, 8, 9],
        ("writer.py", "Keeper.keep", "os.fdopen fd"): [10],
        ("writer.py", "Keeper.keep", "os.open p"): [11, 12],
        ("writer.py", "Keeper.keep", "shutil.copyfile q"): [13],
        ("writer.py", "Keeper.keep", "FileStorage p"): [14, 15],
        ("writer.py", "top", "write_bytes p"): [25],
    }
