"""Real OVMF with Secure Boot on agrees with cvm: our varstore, our signatures, our refusals.

One QEMU boot (TCG) of Debian's ``OVMF_CODE_4M.secboot.fd`` with a varstore written by
``cvm varstore enroll`` and five virtio disks, each holding one tiny EFI application as
``\\EFI\\BOOT\\BOOTX64.EFI``: unsigned, signed then one byte flipped, signed by a key not in
db, signed by the db key but with its hash in dbx, and signed by ``cvm sb sign`` with the
enrolled db key. The firmware tries them in order; the first four end in "Access Denied", only
the last runs (it prints its message) — and
:func:`cvm.guest.boot.secureboot.verify_image` must decide the same for each.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cvm.cli.main import execute
from cvm.crypto.x509_edk2 import der, generate_rsa_key, issue_certificate, pem, private_key_pem
from cvm.formats.pe.authenticode import image_digest
from cvm.formats.pe.builder import CODE, SectionSpec, build_pe
from cvm.formats.uefi.signature_list import EFI_CERT_SHA256, SignatureDatabase, SignatureList
from cvm.guest.boot.secureboot import as_database, verify_image
from cvm.image.signing import sign_pe
from cvm.wire import Guid

pytestmark = [pytest.mark.interop, pytest.mark.slow]
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
BOOT_TIMEOUT_S = 150
OWNER = Guid.parse("00000000-0000-0000-0000-000000000000")


def efi_hello(message: str) -> bytes:
    """A position-independent EFI application: ConOut->OutputString(message); return SUCCESS.

    x86-64 (UEFI 2.10 §2.3.4.2 calling convention): RDX = EFI_SYSTEM_TABLE*, ConOut at +0x40,
    OutputString at +0x08 of EFI_SIMPLE_TEXT_OUTPUT_PROTOCOL.
    """
    text = (message + "\r\n").encode("utf-16-le") + b"\0\0"
    tail = bytes.fromhex("ff5108" "4883c428" "31c0" "c3")  # call [rcx+8]; add rsp,40; xor; ret
    head = bytes.fromhex("4883ec28" "488b4a40" "488d15")  # sub rsp,40; mov rcx,[rdx+0x40]; lea
    code = head + len(tail).to_bytes(4, "little") + tail + text
    return build_pe([SectionSpec(".text", code, CODE)])


def _boot(disks: list[Path], varstore: Path, log: Path, qemu: str, until: str = "UiApp") -> str:
    argv = [
        qemu, "-machine", "q35,smm=on,accel=tcg", "-cpu", "max", "-m", "512",
        "-global", "driver=cfi.pflash01,property=secure,value=on",
        "-drive", f"if=pflash,format=raw,unit=0,file={OVMF_CODE},readonly=on",
        "-drive", f"if=pflash,format=raw,unit=1,file={varstore}",
        "-display", "none", "-serial", f"file:{log}", "-no-reboot", "-monitor", "none",
        "-nic", "none",
    ]
    for disk in disks:
        argv += ["-drive", f"file=fat:{disk},format=raw,if=virtio,readonly=on"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    text = ""
    try:
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)
            text = log.read_bytes().decode("latin-1") if log.exists() else ""
            if until in text:
                break
    finally:
        process.kill()
        process.wait()
    return text


def test_ovmf_runs_only_what_cvm_allows(tmp_path: Path,
                                        require_tool: Callable[[str], str]) -> None:
    qemu = require_tool("qemu-system-x86_64")
    if not OVMF_CODE.exists():
        pytest.fail(f"{OVMF_CODE} is missing (package ovmf)")
    key, other_key = generate_rsa_key(), generate_rsa_key()
    owner = issue_certificate("cvm owner db", key)
    stranger = issue_certificate("cvm owner db", other_key)
    (tmp_path / "db.pem").write_bytes(pem(owner))
    (tmp_path / "db.key").write_bytes(private_key_pem(key))
    signed = sign_pe(efi_hello("cvm-app-good"), key, owner)
    banned = sign_pe(efi_hello("cvm-app-banned"), key, owner)
    varstore = tmp_path / "vars.fd"
    assert execute(["varstore", "enroll", "--pk", str(tmp_path / "db.pem"), "--kek",
                    str(tmp_path / "db.pem"), "--db", str(tmp_path / "db.pem"),
                    "--dbx-hash", image_digest(banned).hex(), "-o", str(varstore)]) == 0
    flipped = bytearray(sign_pe(efi_hello("cvm-app-flipped"), key, owner))
    flipped[flipped.index("flipped".encode("utf-16-le"))] ^= 0x20
    images = {  # the firmware stops trying boot options after one that runs: good goes last
        "unsigned": efi_hello("cvm-app-unsigned"),
        "flipped": bytes(flipped),
        "stranger": sign_pe(efi_hello("cvm-app-stranger"), other_key, stranger),
        "banned": banned,
        "good": signed,
    }
    db = as_database([der(owner)])
    dbx = SignatureDatabase((SignatureList.of(EFI_CERT_SHA256, OWNER, image_digest(banned)),))
    disks = []
    for name, image in images.items():
        folder = tmp_path / name / "EFI" / "BOOT"
        folder.mkdir(parents=True)
        (folder / "BOOTX64.EFI").write_bytes(image)
        disks.append(tmp_path / name)
        assert verify_image(image, db, dbx, name=name).allowed is (name == "good")
    log = _boot(disks, varstore, tmp_path / "serial.log", qemu)
    assert "cvm-app-good" in log, log[-2000:]
    for name in ("unsigned", "flipped", "stranger", "banned"):
        assert f"cvm-app-{name}" not in log and "cvm-app-Flipped" not in log
    assert log.count("Access Denied") == 4, log[-2000:]


def test_ovmf_boots_the_debian_kernel_signed_by_the_owner(
    tmp_path: Path, require_tool: Callable[[str], str], debian_boot_binaries: dict[str, Path],
) -> None:
    qemu = require_tool("qemu-system-x86_64")
    key = generate_rsa_key()
    owner = issue_certificate("cvm owner db", key)
    (tmp_path / "db.pem").write_bytes(pem(owner))
    varstore = tmp_path / "vars.fd"
    assert execute(["varstore", "enroll", "--pk", str(tmp_path / "db.pem"), "--kek",
                    str(tmp_path / "db.pem"), "--db", str(tmp_path / "db.pem"),
                    "-o", str(varstore)]) == 0
    original = debian_boot_binaries["kernel"].read_bytes()
    resigned = sign_pe(original, key, owner)
    db = as_database([der(owner)])
    assert not verify_image(original, db).allowed and verify_image(resigned, db).allowed
    folder = tmp_path / "owner" / "EFI" / "BOOT"
    folder.mkdir(parents=True)
    (folder / "BOOTX64.EFI").write_bytes(resigned)
    marker = "EFI stub: UEFI Secure Boot is enabled."
    log = _boot([tmp_path / "owner"], varstore, tmp_path / "serial.log", qemu, until=marker)
    assert "Access Denied" not in log, log[-2000:]
    assert marker in log, log[-2000:]
