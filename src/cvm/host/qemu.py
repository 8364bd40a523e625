"""``cvm vm run IMAGE --backend qemu``: the host runs an image in the real QEMU + OVMF + swtpm.

The image is a ``cvm image build --target qemu`` folder; the host reads only
``qemu-image.json``, the disk and the varstore (never ``owner/``). It composes QEMU's command
line — q35 with SMM, TCG, OVMF's Secure Boot build on pflash (the varstore copied, so the image
stays as built), a TPM 2.0 on TIS backed by swtpm, the serial console into a file, and the VM
profile's devices (``qemu_args`` of the manifest, ``DISK`` replaced by the disk) — starts
swtpm on a private Unix socket in a private folder, runs the VM, stops swtpm, and reads the
report the initramfs printed (:func:`read_report`).

The TPM is a swtpm state folder: :func:`tpm_setup` makes one and reads its storage root key's
public part (what the owner seals to, ``cvm image build --srk-public``) through tpm2-tools,
before any VM ever ran on it.

SEV-SNP (:func:`snp_argv`): on an SNP host the same VM gets
``-machine ...,confidential-guest-support=sev0,memory-backend=ram1``, its RAM in a memfd
backend, and an ``sev-snp-guest`` object carrying the ID block and ID auth (base64) the
firmware checks at SNP_LAUNCH_FINISH. :func:`parse_snp_argv` reads such a command line back.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvm.errors import ExternalToolError, FormatError, UsageError
from cvm.files import PUBLIC_MODE, write_atomically

SCHEMA = "cvm-qemu-image/1"
MANIFEST = "qemu-image.json"
OWNER_FOLDER = "owner"
SRK_ATTRIBUTES = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt|noda"
SRK_ALGORITHM = "ecc256:aes128cfb"
BOOT_TIMEOUT_S = 600
TOOL_TIMEOUT_S = 60  # one tpm2-tools command against the new TPM
STOP_TIMEOUT_S = 10  # swtpm's exit after SIGTERM, before it is killed
MEMORY_MIB = 1024
MARK_OPENED, MARK_REFUSED, MARK_DONE = "CVM-ROOT-OPENED", "CVM-UNSEAL-FAILED", "CVM-DONE"
MARK_OPEN_FAILED, MARK_PCR = "CVM-OPEN-FAILED", "CVM-PCR"
CBITPOS, REDUCED_PHYS_BITS = 51, 1
SNP_POLICY = 0x30000


def _tool(name: str) -> str:
    found = shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/sbin") if (p := Path(d) / name).exists()), None)
    if found is None:
        raise ExternalToolError(f"{name} is not installed")
    return found


@dataclass(frozen=True)
class QemuImage:
    """What the host holds of a ``--target qemu`` image."""

    folder: Path
    disk: Path
    varstore: Path
    firmware: Path
    qemu_args: str
    profile: str

    @classmethod
    def load(cls, folder: Path) -> QemuImage:
        return load_image(folder)


def load_image(folder: Path) -> QemuImage:
    """The image in ``folder``: its manifest read strictly, the disk and the varstore inside
    the folder and outside ``owner/``."""
    path = folder / MANIFEST
    try:
        manifest: Any = json.loads(path.read_text())
    except OSError:
        raise UsageError(f"{folder}: not a qemu image (no {MANIFEST})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FormatError(f"{path}: not JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise FormatError(f"{path}: schema is not {SCHEMA}")
    fields = {}
    for name in ("disk", "varstore", "firmware", "qemu_args", "profile"):
        value = manifest.get(name)
        if not isinstance(value, str) or not value:
            raise FormatError(f"{path}: {name} is missing or not a string")
        fields[name] = value
    files = {}
    for name in ("disk", "varstore"):
        file = (folder / fields[name]).resolve()
        if not file.is_relative_to(folder.resolve()) or file.is_relative_to(
                (folder / OWNER_FOLDER).resolve()):
            raise FormatError(f"{path}: {name} {fields[name]!r} is outside the image")
        files[name] = file
    if "file=DISK" not in fields["qemu_args"]:
        raise FormatError(f"{path}: qemu_args does not name the DISK")
    return QemuImage(folder, files["disk"], files["varstore"], Path(fields["firmware"]),
                     fields["qemu_args"], fields["profile"])


def profile_args(qemu_args: str, disk: Path) -> list[str]:
    """The profile's devices with the disk in place of ``DISK`` (``-machine q35`` dropped:
    :func:`qemu_argv` sets the machine)."""
    parts = [part.replace("file=DISK", f"file={disk}") for part in qemu_args.split()]
    out: list[str] = []
    skip = False
    for index, part in enumerate(parts):
        if skip:
            skip = False
            continue
        if part == "-machine" and index + 1 < len(parts) and parts[index + 1] == "q35":
            skip = True
            continue
        out.append(part)
    return out


def qemu_argv(image: QemuImage, varstore: Path, tpm_socket: Path, serial: Path,
              qemu: str = "qemu-system-x86_64") -> list[str]:
    """The command line of one boot of ``image`` (q35, TCG, Secure Boot OVMF, swtpm)."""
    return [
        qemu, "-machine", "q35,smm=on,accel=tcg", "-cpu", "max", "-m", str(MEMORY_MIB),
        "-global", "driver=cfi.pflash01,property=secure,value=on",
        "-drive", f"if=pflash,format=raw,unit=0,file={image.firmware},readonly=on",
        "-drive", f"if=pflash,format=raw,unit=1,file={varstore}",
        "-chardev", f"socket,id=chrtpm,path={tpm_socket}",
        "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0",
        "-display", "none", "-serial", f"file:{serial}", "-no-reboot", "-monitor", "none",
        *profile_args(image.qemu_args, image.disk),
    ]


@dataclass(frozen=True)
class BootReport:
    """What the initramfs printed on the serial console."""

    outcome: str  # "opened", "refused", "open-failed" or "incomplete"
    detail: str
    pcrs: dict[int, str]
    serial: str


def read_report(serial: str) -> BootReport:
    """The outcome of one boot from its serial console text."""
    pcrs = {int(p): v.lower() for p, v in
            re.findall(rf"^{MARK_PCR} sha256 (\d+) ([0-9A-Fa-f]+)\s*$", serial, re.MULTILINE)}
    lines = serial.splitlines()

    def after(mark: str) -> str | None:
        for line in lines:
            if line.startswith(mark):
                return line[len(mark):].strip()
        return None

    done = any(line.strip() == MARK_DONE for line in lines)
    for mark, outcome in ((MARK_OPENED, "opened"), (MARK_REFUSED, "refused"),
                          (MARK_OPEN_FAILED, "open-failed")):
        detail = after(mark)
        if detail is not None and done:
            return BootReport(outcome, detail, pcrs, serial)
    tail = " | ".join(line.strip() for line in lines[-3:] if line.strip())
    return BootReport("incomplete", tail or "nothing on the serial console", pcrs, serial)


def _wait_for(path: Path, process: subprocess.Popen[bytes], what: str) -> None:
    for _ in range(100):
        if path.exists():
            return
        if process.poll() is not None:
            raise ExternalToolError(f"{what} exited with status {process.returncode}")
        time.sleep(0.05)
    raise ExternalToolError(f"{what} did not create {path}")


def run_image(image: QemuImage, tpm_state: Path, timeout: float = BOOT_TIMEOUT_S) -> BootReport:
    """Boot ``image`` once with swtpm on ``tpm_state`` (a :func:`tpm_setup` folder)."""
    if not (tpm_state / "tpm2-00.permall").exists():
        raise UsageError(f"{tpm_state}: not a TPM state folder (cvm vm tpm-setup makes one)")
    qemu, swtpm = _tool("qemu-system-x86_64"), _tool("swtpm")
    with tempfile.TemporaryDirectory(prefix="cvm-qemu-run-") as private:
        work = Path(private)
        work.chmod(0o700)
        tpm_socket, serial, varstore = work / "swtpm.sock", work / "serial.log", work / "vars.fd"
        shutil.copyfile(image.varstore, varstore)
        server = subprocess.Popen(
            [swtpm, "socket", "--tpm2", "--tpmstate", f"dir={tpm_state}",
             "--ctrl", f"type=unixio,path={tpm_socket}", "--terminate"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_for(tpm_socket, server, "swtpm")
            try:
                done = subprocess.run(qemu_argv(image, varstore, tpm_socket, serial, qemu),
                                      capture_output=True, timeout=timeout, check=False)
            except subprocess.TimeoutExpired:
                raise ExternalToolError(f"QEMU did not finish within {timeout:.0f} s") from None
        finally:
            server.kill()
            server.wait()
            if server.stderr is not None:
                server.stderr.close()
        text = serial.read_bytes().decode("latin-1") if serial.exists() else ""
    if done.returncode and MARK_DONE not in text:
        raise ExternalToolError(f"QEMU exited with status {done.returncode}: "
                                f"{done.stderr.decode(errors='replace').strip()[-300:]}")
    return read_report(text)


def free_port_pair() -> int:
    """A port ``p`` on 127.0.0.1 with ``p`` and ``p + 1`` both free (a TPM server's command
    and platform ports)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port >= 65535:  # no port after it
            continue
        try:
            with socket.socket() as first, socket.socket() as second:
                first.bind(("127.0.0.1", port))
                second.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise ExternalToolError("no two consecutive free TCP ports for swtpm")


def tpm_setup(state: Path) -> bytes:
    """A new TPM (swtpm state in ``state``, sha1 and sha256 banks); returns its storage root
    key's public part as a TPM2B_PUBLIC (also written to ``state/srk.pub``)."""
    if state.exists() and any(state.iterdir()):
        raise UsageError(f"{state} is not empty: a TPM state is never overwritten")
    state.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([_tool("swtpm_setup"), "--tpm2", "--tpmstate", str(state),
                           "--pcr-banks", "sha1,sha256"], capture_output=True, text=True,
                          check=False)
    if done.returncode:
        raise ExternalToolError(f"swtpm_setup: {done.stderr.strip()[-300:]}")
    port = free_port_pair()
    server = subprocess.Popen(
        [_tool("swtpm"), "socket", "--tpm2", "--tpmstate", f"dir={state}",
         "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
         "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1", "--flags", "startup-clear"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"TPM2TOOLS_TCTI": f"swtpm:host=127.0.0.1,port={port}", "PATH": "/usr/bin:/bin"}
    try:
        with tempfile.TemporaryDirectory(prefix="cvm-srk-") as scratch:
            for _ in range(100):
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.05)
            for argv in (["tpm2_createprimary", "-C", "o", "-g", "sha256", "-G", SRK_ALGORITHM,
                          "-a", SRK_ATTRIBUTES, "-c", "srk.ctx", "-Q"],
                         ["tpm2_readpublic", "-c", "srk.ctx", "-o", "srk.pub", "-Q"],
                         ["tpm2_shutdown"]):
                try:
                    done = subprocess.run([_tool(argv[0]), *argv[1:]], cwd=scratch, env=env,
                                          capture_output=True, text=True,
                                          timeout=TOOL_TIMEOUT_S, check=False)
                except subprocess.TimeoutExpired:
                    raise ExternalToolError(f"{argv[0]} did not finish within "
                                            f"{TOOL_TIMEOUT_S} s") from None
                if done.returncode:
                    raise ExternalToolError(f"{argv[0]}: {done.stderr.strip()[-300:]}")
            public = (Path(scratch) / "srk.pub").read_bytes()
    finally:
        server.terminate()
        try:
            server.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    write_atomically(state / "srk.pub", public, PUBLIC_MODE)
    return public


def snp_argv(image: QemuImage, firmware: Path, id_block: bytes, id_auth: bytes, vcpus: int,
             policy: int = SNP_POLICY, cpu: str = "EPYC-Milan",
             qemu: str = "qemu-system-x86_64") -> list[str]:
    """The command line of ``image`` as an SEV-SNP guest (no SMM, no pflash: OVMF as
    ``-bios``; the vTPM is the SVSM's or the guest's own, not the host's swtpm)."""
    guest = ",".join([
        "sev-snp-guest", "id=sev0", f"cbitpos={CBITPOS}",
        f"reduced-phys-bits={REDUCED_PHYS_BITS}", f"policy={policy:#x}",
        f"id-block={base64.b64encode(id_block).decode()}",
        f"id-auth={base64.b64encode(id_auth).decode()}", "author-key-enabled=on",
    ])
    return [
        qemu, "-machine", "q35,confidential-guest-support=sev0,memory-backend=ram1,accel=kvm",
        "-cpu", cpu, "-smp", str(vcpus), "-m", f"{MEMORY_MIB}M",
        "-object", f"memory-backend-memfd,id=ram1,size={MEMORY_MIB}M,share=true,prealloc=false",
        "-object", guest, "-bios", str(firmware), "-display", "none", "-serial", "stdio",
        "-no-reboot", *profile_args(image.qemu_args, image.disk),
    ]


def parse_snp_argv(argv: list[str]) -> dict[str, str]:
    """The ``sev-snp-guest`` object's properties of a command line (FormatError if absent)."""
    for flag, value in itertools.pairwise(argv):
        if flag == "-object" and value.startswith("sev-snp-guest,"):
            props = {}
            for item in value.split(",")[1:]:
                key, sep, text = item.partition("=")
                if not sep:
                    raise FormatError(f"sev-snp-guest: {item!r} is not key=value")
                props[key] = text
            return props
    raise FormatError("the command line has no -object sev-snp-guest")
