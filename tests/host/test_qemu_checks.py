"""The qemu backend's host side (`cvm.host.qemu`) checked without QEMU: the image read
strictly, the command lines compared whole, the serial report's edge cases, and the processes
(QEMU, swtpm, swtpm_setup, tpm2-tools) played by small scripts that record what they were given.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from cvm.errors import ExternalToolError, FormatError, UsageError
from cvm.host import qemu
from cvm.host.qemu import (
    MANIFEST,
    SCHEMA,
    BootReport,
    QemuImage,
    _tool,
    _wait_for,
    free_port_pair,
    load_image,
    parse_snp_argv,
    profile_args,
    qemu_argv,
    read_report,
    run_image,
    snp_argv,
    tpm_setup,
)

PROFILE_ARGS = "-machine q35 -drive file=DISK,format=raw,if=virtio -nic none"
FIRMWARE = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"


def _image(folder: Path, **changes: object) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "disk.img").write_bytes(bytes(512))
    (folder / "OVMF_VARS.fd").write_bytes(b"the image's varstore")
    manifest: dict[str, object] = {
        "schema": SCHEMA, "disk": "disk.img", "varstore": "OVMF_VARS.fd", "firmware": FIRMWARE,
        "qemu_args": PROFILE_ARGS, "profile": "q35", **changes,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


# --- the image ---------------------------------------------------------------------------------

def test_the_image_is_its_manifests_fields(tmp_path: Path) -> None:
    folder = _image(tmp_path / "img", disk="sub/../disk.img")
    assert load_image(folder) == QemuImage(
        folder, (folder / "disk.img").resolve(), (folder / "OVMF_VARS.fd").resolve(),
        Path(FIRMWARE), PROFILE_ARGS, "q35") == QemuImage.load(folder)


@pytest.mark.parametrize(("changes", "message"), [
    ({"schema": "cvm-qemu-image/2"}, "schema is not cvm-qemu-image/1"),
    ({"schema": None}, "schema is not cvm-qemu-image/1"),
    ({"disk": None}, "disk is missing or not a string"),
    ({"disk": ""}, "disk is missing or not a string"),
    ({"disk": ["disk.img"]}, "disk is missing or not a string"),
    ({"varstore": 1}, "varstore is missing or not a string"),
    ({"firmware": ""}, "firmware is missing or not a string"),
    ({"qemu_args": False}, "qemu_args is missing or not a string"),
    ({"profile": None}, "profile is missing or not a string"),
    ({"disk": "", "profile": ""}, "disk is missing or not a string"),  # the first, in order
    ({"varstore": "", "qemu_args": ""}, "varstore is missing or not a string"),
    ({"disk": "../disk.img"}, "disk '../disk.img' is outside the image"),
    ({"disk": "/etc/passwd"}, "disk '/etc/passwd' is outside the image"),
    ({"disk": "owner/root.key"}, "disk 'owner/root.key' is outside the image"),
    ({"varstore": "owner"}, "varstore 'owner' is outside the image"),
    ({"varstore": "../img2/OVMF_VARS.fd"}, "varstore '../img2/OVMF_VARS.fd' is outside the image"),
    ({"qemu_args": "-machine q35 -drive file=disk.img"}, "qemu_args does not name the DISK"),
])
def test_the_manifest_is_read_strictly(tmp_path: Path, changes: dict[str, object],
                                       message: str) -> None:
    folder = _image(tmp_path / "img", **{k: v for k, v in changes.items() if v is not None})
    if None in changes.values():
        manifest = json.loads((folder / MANIFEST).read_text())
        for key in (k for k, v in changes.items() if v is None):
            del manifest[key]
        (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(FormatError) as caught:
        load_image(folder)
    assert str(caught.value) == f"{folder / MANIFEST}: {message}"


def test_a_link_out_of_the_image_is_outside_it(tmp_path: Path) -> None:
    folder = _image(tmp_path / "img")
    (tmp_path / "elsewhere.img").write_bytes(b"")
    (folder / "link.img").symlink_to(tmp_path / "elsewhere.img")
    (folder / "owner").mkdir()
    (folder / "owner" / "vars.fd").write_bytes(b"")
    (folder / "vars.fd").symlink_to(folder / "owner" / "vars.fd")
    for changes in ({"disk": "link.img"}, {"varstore": "vars.fd"}):
        (folder / MANIFEST).write_text(json.dumps({
            "schema": SCHEMA, "disk": "disk.img", "varstore": "OVMF_VARS.fd",
            "firmware": FIRMWARE, "qemu_args": PROFILE_ARGS, "profile": "q35", **changes}))
        with pytest.raises(FormatError, match="is outside the image"):
            load_image(folder)


def test_a_manifest_that_is_not_a_json_object_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "img"
    folder.mkdir()
    with pytest.raises(UsageError) as caught:
        load_image(folder)
    assert str(caught.value) == f"{folder}: not a qemu image (no qemu-image.json)"
    for text, message in ((b"[1]", "schema is not cvm-qemu-image/1"),
                          (b'"cvm-qemu-image/1"', "schema is not cvm-qemu-image/1"),
                          (b"{", "not JSON (Expecting property name enclosed in double quotes: "
                                 "line 1 column 2 (char 1))"),
                          (b'{"schema": "\xff"}', "not JSON (")):
        (folder / MANIFEST).write_bytes(text)
        with pytest.raises(FormatError) as caught:
            load_image(folder)
        assert str(caught.value).startswith(f"{folder / MANIFEST}: {message}")


# --- the command lines -------------------------------------------------------------------------

def test_the_profiles_machine_is_folded_in_and_the_disk_named() -> None:
    disk = Path("/images/one/disk.img")
    assert profile_args(PROFILE_ARGS, disk) == [
        "-drive", "file=/images/one/disk.img,format=raw,if=virtio", "-nic", "none"]
    assert profile_args("-nic none  -machine q35   -device x,file=DISK", disk) == [
        "-nic", "none", "-device", "x,file=/images/one/disk.img"]
    assert profile_args("-machine pc -drive file=DISK", disk) == [
        "-machine", "pc", "-drive", "file=/images/one/disk.img"]
    assert profile_args("-drive DISK -machine", disk) == ["-drive", "DISK", "-machine"]
    assert profile_args("-machine -machine q35", disk) == ["-machine"]
    assert profile_args("q35 -machine q35 q35", disk) == ["q35", "q35"]


def test_the_command_line_of_one_boot_whole(tmp_path: Path) -> None:
    image = load_image(_image(tmp_path / "img"))
    assert qemu_argv(image, Path("/p/vars.fd"), Path("/p/tpm.sock"), Path("/p/serial"),
                     "/opt/qemu") == [
        "/opt/qemu", "-machine", "q35,smm=on,accel=tcg", "-cpu", "max", "-m", "1024",
        "-global", "driver=cfi.pflash01,property=secure,value=on",
        "-drive", f"if=pflash,format=raw,unit=0,file={FIRMWARE},readonly=on",
        "-drive", "if=pflash,format=raw,unit=1,file=/p/vars.fd",
        "-chardev", "socket,id=chrtpm,path=/p/tpm.sock",
        "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0",
        "-display", "none", "-serial", "file:/p/serial", "-no-reboot", "-monitor", "none",
        "-drive", f"file={image.disk},format=raw,if=virtio", "-nic", "none"]
    assert qemu_argv(image, Path("/v"), Path("/s"), Path("/c"))[0] == "qemu-system-x86_64"


def test_the_snp_command_line_whole(tmp_path: Path) -> None:
    image = load_image(_image(tmp_path / "img"))
    argv = snp_argv(image, Path("/fw/OVMF.fd"), b"\x01\x02\x03", b"\xff" * 4, 4,
                    policy=0x30001, cpu="EPYC-Genoa", qemu="/opt/qemu")
    assert argv == [
        "/opt/qemu", "-machine",
        "q35,confidential-guest-support=sev0,memory-backend=ram1,accel=kvm",
        "-cpu", "EPYC-Genoa", "-smp", "4", "-m", "1024M",
        "-object", "memory-backend-memfd,id=ram1,size=1024M,share=true,prealloc=false",
        "-object", "sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,policy=0x30001,"
                   "id-block=AQID,id-auth=/////w==,author-key-enabled=on",
        "-bios", "/fw/OVMF.fd", "-display", "none", "-serial", "stdio", "-no-reboot",
        "-drive", f"file={image.disk},format=raw,if=virtio", "-nic", "none"]
    assert parse_snp_argv(argv) == {
        "id": "sev0", "cbitpos": "51", "reduced-phys-bits": "1", "policy": "0x30001",
        "id-block": "AQID", "id-auth": "/////w==", "author-key-enabled": "on"}
    default = snp_argv(image, Path("/fw"), b"", b"", 1)
    assert default[:6] == ["qemu-system-x86_64", "-machine",
                           "q35,confidential-guest-support=sev0,memory-backend=ram1,accel=kvm",
                           "-cpu", "EPYC-Milan", "-smp"]
    assert parse_snp_argv(default)["policy"] == "0x30000"


def test_the_snp_object_is_the_first_sev_snp_guest_after_an_object_flag() -> None:
    assert parse_snp_argv(["-object", "sev-snp-guest,a=1,b=,c=x=y", "-object",
                           "sev-snp-guest,a=2"]) == {"a": "1", "b": "", "c": "x=y"}
    assert parse_snp_argv(["-object", "sev-snp-guestx,a=1", "-object",
                           "sev-snp-guest,a=3"]) == {"a": "3"}
    for argv in (["-device", "sev-snp-guest,a=1"], ["sev-snp-guest,a=1"],
                 ["-object", "sev-guest,a=1"], ["-object"], []):
        with pytest.raises(FormatError) as caught:
            parse_snp_argv(argv)
        assert str(caught.value) == "the command line has no -object sev-snp-guest"
    with pytest.raises(FormatError) as caught:
        parse_snp_argv(["-object", "sev-snp-guest,a=1,flag"])
    assert str(caught.value) == "sev-snp-guest: 'flag' is not key=value"


# --- the serial report -------------------------------------------------------------------------

def test_the_report_reads_each_outcome_only_after_the_end_mark() -> None:
    assert read_report("CVM-ROOT-OPENED  data  \n  CVM-DONE  \n") == BootReport(
        "opened", "data", {}, "CVM-ROOT-OPENED  data  \n  CVM-DONE  \n")
    assert read_report("CVM-ROOT-OPENED\nCVM-DONE\n").detail == ""
    # the first outcome in mark order wins, and the first line of a mark
    text = "CVM-UNSEAL-FAILED no\nCVM-ROOT-OPENED yes\nCVM-ROOT-OPENED again\nCVM-DONE\n"
    assert (read_report(text).outcome, read_report(text).detail) == ("opened", "yes")
    text = "CVM-OPEN-FAILED\nCVM-UNSEAL-FAILED E\nCVM-DONE"
    assert (read_report(text).outcome, read_report(text).detail) == ("refused", "E")
    assert read_report("CVM-OPEN-FAILED x\nCVM-DONE").detail == "x"
    for text in ("CVM-ROOT-OPENED data\nCVM-DONE now\n", "CVM-ROOT-OPENED data\nxCVM-DONE\n",
                 "CVM-ROOT-OPENED data\n", " CVM-ROOT-OPENED data\nCVM-DONE\n"):
        assert read_report(text).outcome == "incomplete", text


def test_the_pcrs_are_the_lines_that_are_exactly_a_pcr_report() -> None:
    text = ("CVM-PCR sha256 4 ABcd  \n"
            "CVM-PCR sha256 7 0a\n"
            "x CVM-PCR sha256 8 01\n"
            "CVM-PCR sha1 9 01\n"
            "CVM-PCR sha256 10 0g\n"
            "CVM-PCR sha256 11 01 trailing\n"
            "CVM-PCR sha256 x 01\n"
            "CVM-PCR sha256 12 \n"
            "CVM-PCR sha256 4 ff\n")
    assert read_report(text).pcrs == {4: "ff", 7: "0a"}
    assert read_report("CVM-PCR sha256 23 " + "AB" * 32).pcrs == {23: "ab" * 32}


def test_an_incomplete_report_shows_the_last_three_lines_that_say_something() -> None:
    text = "one\ntwo\n  three  \nfour\n"
    assert read_report(text).detail == "two | three | four"
    assert read_report("one\n\n \nfour\n").detail == "four"
    assert read_report("\n\n").detail == "nothing on the serial console"
    assert read_report("only").detail == "only"


# --- tools and waiting -------------------------------------------------------------------------

def test_a_tool_is_found_on_the_path_then_in_the_sbin_folders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _tool("sh") == shutil.which("sh")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert _tool("cryptsetup") == "/usr/sbin/cryptsetup"
    with pytest.raises(ExternalToolError) as caught:
        _tool("cvm-no-such-tool")
    assert str(caught.value) == "cvm-no-such-tool is not installed"


class Clock:
    """Stands for the ``time`` module in cvm.host.qemu: records each nap, sleeps none."""

    def __init__(self, naps: list[float]) -> None:
        self.sleep = naps.append


class Process:
    """A process as ``_wait_for`` polls it."""

    def __init__(self, exits_after: int | None, returncode: int = 3) -> None:
        self.polls = 0
        self.exits_after = exits_after
        self.code = returncode
        self.returncode: int | None = None

    def poll(self) -> int | None:
        self.polls += 1
        if self.exits_after is not None and self.polls > self.exits_after:
            self.returncode = self.code
        return self.returncode


def test_waiting_for_a_file_a_process_makes(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    naps: list[float] = []
    monkeypatch.setattr(qemu, "time", Clock(naps))
    made = tmp_path / "made"
    made.write_bytes(b"")
    _wait_for(made, Process(None), "swtpm")  # type: ignore[arg-type]
    assert naps == []
    process = Process(5, 0)
    with pytest.raises(ExternalToolError) as caught:
        _wait_for(tmp_path / "never", process, "swtpm")  # type: ignore[arg-type]
    assert str(caught.value) == "swtpm exited with status 0"
    assert naps == [0.05] * 5 and process.polls == 6
    naps.clear()
    with pytest.raises(ExternalToolError) as caught:
        _wait_for(tmp_path / "never", Process(None), "the TPM")  # type: ignore[arg-type]
    assert str(caught.value) == f"the TPM did not create {tmp_path / 'never'}"
    assert naps == [0.05] * 100


# --- one boot, with QEMU and swtpm played by scripts -------------------------------------------

FAKE_SWTPM = """
import os, sys, time
args = sys.argv[1:]
record(args)
print("swtpm on stdout", flush=True)
print("swtpm on stderr", file=sys.stderr, flush=True)
if behaviour.get("swtpm_exit") is not None:
    sys.exit(behaviour["swtpm_exit"])
control = args[args.index("--ctrl") + 1]
open(control.split("path=", 1)[1], "w").close()
time.sleep(60)
"""

FAKE_QEMU = """
import os, sys, time
args = sys.argv[1:]
serial = next(a[len("file:"):] for a in args if a.startswith("file:"))
vars_file = next(a.split("file=", 1)[1] for a in args
                 if a.startswith("if=pflash,format=raw,unit=1"))
folder = os.path.dirname(serial)
record({"args": args, "mode": os.stat(folder).st_mode & 0o777,
        "vars": open(vars_file).read(), "swtpm_running": swtpm_running()})
open(vars_file, "w").write("written by the firmware")
if behaviour.get("serial") is not None:
    open(serial, "wb").write(behaviour["serial"].encode("latin-1"))
sys.stderr.buffer.write(behaviour.get("stderr", "").encode("latin-1"))
time.sleep(behaviour.get("sleep", 0))
sys.exit(behaviour.get("exit", 0))
"""

PRELUDE = """#!{python}
import json, os, sys
HERE = os.path.dirname(os.path.abspath(__file__))
behaviour = json.load(open(os.path.join(HERE, "behaviour.json")))
def record(value):
    with open(os.path.join(HERE, os.path.basename(__file__) + ".log"), "a") as log:
        env = {{k: os.environ.get(k) for k in ("TPM2TOOLS_TCTI", "PATH")}}
        log.write(json.dumps({{"value": value, "cwd": os.getcwd(), "env": env}}) + "\\n")
def swtpm_running():
    try:
        pid = int(open(os.path.join(HERE, "swtpm.pid")).read())
        os.kill(pid, 0)
        return True
    except (OSError, ValueError):
        return False
"""


class Tools:
    """Scripts standing for the host's tools, found through ``_tool``; what they did."""

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.folder = folder
        folder.mkdir()
        self.behave()
        monkeypatch.setattr(qemu, "_tool", lambda name: str(folder / name))

    def add(self, name: str, body: str) -> None:
        script = self.folder / name
        script.write_text(PRELUDE.format(python=sys.executable) + textwrap.dedent(body))
        script.chmod(0o755)

    def behave(self, **behaviour: Any) -> None:
        (self.folder / "behaviour.json").write_text(json.dumps(behaviour))

    def calls(self, name: str) -> list[dict[str, Any]]:
        log = self.folder / f"{name}.log"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Tools:
    found = Tools(tmp_path / "tools", monkeypatch)
    found.add("swtpm", "open(os.path.join(HERE, 'swtpm.pid'), 'w').write(str(os.getpid()))\n"
              + FAKE_SWTPM)
    found.add("qemu-system-x86_64", FAKE_QEMU)
    return found


def _state(tmp_path: Path) -> Path:
    state = tmp_path / "tpm"
    state.mkdir()
    (state / "tpm2-00.permall").write_bytes(b"")
    return state


def _swtpm_gone(tools: Tools) -> bool:
    try:
        os.kill(int((tools.folder / "swtpm.pid").read_text()), 0)
    except ProcessLookupError:
        return True
    return False


def test_one_boot_runs_qemu_on_a_copy_of_the_varstore_with_swtpm_beside_it(
    tmp_path: Path, tools: Tools, capfd: pytest.CaptureFixture[str],
) -> None:
    tools.behave(serial="CVM-PCR sha256 4 AB\nCVM-ROOT-OPENED data \xe9\nCVM-DONE\n")
    image = load_image(_image(tmp_path / "img"))
    state = _state(tmp_path)
    report = run_image(image, state)
    assert report == BootReport("opened", "data \xe9", {4: "ab"},
                                "CVM-PCR sha256 4 AB\nCVM-ROOT-OPENED data \xe9\nCVM-DONE\n")
    (booted,) = tools.calls("qemu-system-x86_64")
    args = booted["value"]["args"]
    work = Path(args[args.index("-serial") + 1].removeprefix("file:")).parent
    assert args == qemu_argv(image, work / "vars.fd", work / "swtpm.sock", work / "serial.log",
                             str(tools.folder / "qemu-system-x86_64"))[1:]
    assert booted["value"]["mode"] == 0o700
    assert booted["value"]["vars"] == "the image's varstore"
    assert booted["value"]["swtpm_running"] is True
    assert (tmp_path / "img" / "OVMF_VARS.fd").read_bytes() == b"the image's varstore"
    (served,) = tools.calls("swtpm")
    assert served["value"] == ["socket", "--tpm2", "--tpmstate", f"dir={state}", "--ctrl",
                               f"type=unixio,path={work / 'swtpm.sock'}", "--terminate"]
    assert _swtpm_gone(tools)
    assert not work.exists()
    assert capfd.readouterr() == ("", "")  # nothing of swtpm's reaches the user's terminal


def test_a_boot_that_prints_nothing_is_incomplete(tmp_path: Path, tools: Tools) -> None:
    report = run_image(load_image(_image(tmp_path / "img")), _state(tmp_path))
    assert report == BootReport("incomplete", "nothing on the serial console", {}, "")


def test_qemu_failing_is_an_error_unless_the_report_was_complete(tmp_path: Path,
                                                                 tools: Tools) -> None:
    image, state = load_image(_image(tmp_path / "img")), _state(tmp_path)
    tools.behave(serial="CVM-ROOT-OPENED x\n", exit=1, stderr="x" * 400 + "the reason \xff\n")
    with pytest.raises(ExternalToolError) as caught:
        run_image(image, state)
    assert str(caught.value) == "QEMU exited with status 1: " + ("x" * 400 + "the reason "
                                                                 "\ufffd")[-300:]
    assert _swtpm_gone(tools)
    tools.behave(serial="CVM-UNSEAL-FAILED E\nCVM-DONE\n", exit=1)
    assert run_image(image, state).outcome == "refused"
    tools.behave(exit=2)
    with pytest.raises(ExternalToolError) as caught:
        run_image(image, state)
    assert str(caught.value) == "QEMU exited with status 2: "


def test_qemu_that_does_not_finish_in_time_is_stopped(tmp_path: Path, tools: Tools) -> None:
    tools.behave(sleep=30)
    with pytest.raises(ExternalToolError) as caught:
        run_image(load_image(_image(tmp_path / "img")), _state(tmp_path), timeout=1.4)
    assert str(caught.value) == "QEMU did not finish within 1 s"
    assert _swtpm_gone(tools)


def test_swtpm_that_exits_stops_the_boot_before_qemu(tmp_path: Path, tools: Tools) -> None:
    tools.behave(swtpm_exit=4)
    with pytest.raises(ExternalToolError) as caught:
        run_image(load_image(_image(tmp_path / "img")), _state(tmp_path))
    assert str(caught.value) == "swtpm exited with status 4"
    assert tools.calls("qemu-system-x86_64") == []


def test_a_folder_without_the_tpms_state_is_refused(tmp_path: Path, tools: Tools) -> None:
    state = tmp_path / "tpm"
    state.mkdir()
    (state / "tpm2-00.volatilestate").write_bytes(b"")
    with pytest.raises(UsageError) as caught:
        run_image(load_image(_image(tmp_path / "img")), state)
    assert str(caught.value) == (f"{state}: not a TPM state folder (cvm vm tpm-setup makes "
                                 "one)")
    assert tools.calls("swtpm") == []


# --- a free pair of ports ----------------------------------------------------------------------

class Sockets:
    """Stands for the ``socket`` module: the probe answers ``ports`` in turn; binding a port in
    ``taken`` fails."""

    def __init__(self, ports: list[int], taken: set[int]) -> None:
        self.ports, self.taken = list(ports), taken
        self.bound: list[tuple[str, int]] = []

    def socket(self) -> Sockets.Socket:
        return Sockets.Socket(self)

    class Socket:
        def __init__(self, owner: Sockets) -> None:
            self.owner = owner

        def __enter__(self) -> Sockets.Socket:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def bind(self, address: tuple[str, int]) -> None:
            self.owner.bound.append(address)
            self.port = address[1]
            if address[1] in self.owner.taken:
                raise OSError("in use")

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.owner.ports.pop(0) if self.port == 0 else self.port)


def test_a_port_pair_skips_the_last_port_and_taken_neighbours(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sockets = Sockets([65535, 5000, 6000, 7000], {5001, 6000})
    monkeypatch.setattr(qemu, "socket", sockets)
    assert free_port_pair() == 7000
    assert sockets.bound == [("127.0.0.1", 0), ("127.0.0.1", 0), ("127.0.0.1", 5000),
                             ("127.0.0.1", 5001), ("127.0.0.1", 0), ("127.0.0.1", 6000),
                             ("127.0.0.1", 0), ("127.0.0.1", 7000), ("127.0.0.1", 7001)]
    monkeypatch.setattr(qemu, "socket", Sockets([65534], set()))
    assert free_port_pair() == 65534
    monkeypatch.setattr(qemu, "socket", Sockets([65535] * 49 + [9000], set()))
    assert free_port_pair() == 9000
    monkeypatch.setattr(qemu, "socket", Sockets([65535] * 50 + [9000], set()))
    with pytest.raises(ExternalToolError) as caught:
        free_port_pair()
    assert str(caught.value) == "no two consecutive free TCP ports for swtpm"


def test_a_real_port_pair_is_free() -> None:
    import socket

    port = free_port_pair()
    with socket.socket() as first, socket.socket() as second:
        first.bind(("127.0.0.1", port))
        second.bind(("127.0.0.1", port + 1))


# --- a new TPM, with swtpm_setup, swtpm and tpm2-tools played by scripts -----------------------

FAKE_SETUP = """
record(sys.argv[1:])
if behaviour.get("setup_exit"):
    sys.stderr.write(behaviour.get("setup_stderr", ""))
    sys.exit(behaviour["setup_exit"])
state = sys.argv[sys.argv.index("--tpmstate") + 1]
open(os.path.join(state, "tpm2-00.permall"), "w").close()
"""

FAKE_TCP_SWTPM = """
import signal, socket, time
record(sys.argv[1:])
open(os.path.join(HERE, "swtpm.pid"), "w").write(str(os.getpid()))
print("swtpm on stdout", flush=True)
print("swtpm on stderr", file=sys.stderr, flush=True)
server = sys.argv[sys.argv.index("--server") + 1]
port = int(server.split("port=")[1].split(",")[0])
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", port))
listener.listen()
def stop(signum, frame):
    open(os.path.join(HERE, "swtpm.stopped"), "w").write(str(signum))
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if behaviour.get("deaf") else stop)
time.sleep(60)
"""

FAKE_TPM2 = """
name = os.path.basename(__file__)
record([name, *sys.argv[1:]])
if behaviour.get("hang") == name:
    import time
    time.sleep(30)
if behaviour.get("fail") == name:
    sys.stderr.write("y" * 400 + "the TPM said no\\n")
    sys.exit(1)
if name == "tpm2_readpublic":
    out = sys.argv[sys.argv.index("-o") + 1]
    open(out, "wb").write(b"\\x00\\x04" + os.getcwd().encode())
"""


@pytest.fixture
def tpm_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Tools:
    found = Tools(tmp_path / "tools", monkeypatch)
    found.add("swtpm_setup", FAKE_SETUP)
    found.add("swtpm", FAKE_TCP_SWTPM)
    for name in ("tpm2_createprimary", "tpm2_readpublic", "tpm2_shutdown"):
        found.add(name, FAKE_TPM2)
    return found


def test_a_new_tpm_gives_its_srk_public(tmp_path: Path, tpm_tools: Tools,
                                        capfd: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "new" / "state"
    public = tpm_setup(state)
    (setup,) = tpm_tools.calls("swtpm_setup")
    assert setup["value"] == ["--tpm2", "--tpmstate", str(state), "--pcr-banks", "sha1,sha256"]
    (served,) = tpm_tools.calls("swtpm")
    port = int(served["value"][5].split("port=")[1].split(",")[0])
    assert served["value"] == [
        "socket", "--tpm2", "--tpmstate", f"dir={state}",
        "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
        "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1", "--flags", "startup-clear"]
    calls = [tpm_tools.calls(name)[0] for name in ("tpm2_createprimary", "tpm2_readpublic",
                                                   "tpm2_shutdown")]
    assert [c["value"] for c in calls] == [
        ["tpm2_createprimary", "-C", "o", "-g", "sha256", "-G", "ecc256:aes128cfb", "-a",
         "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt|noda",
         "-c", "srk.ctx", "-Q"],
        ["tpm2_readpublic", "-c", "srk.ctx", "-o", "srk.pub", "-Q"],
        ["tpm2_shutdown"]]
    scratch = calls[0]["cwd"]
    assert {c["cwd"] for c in calls} == {scratch} and Path(scratch).name.startswith("cvm-srk-")
    assert not Path(scratch).exists()
    for call in calls:
        assert call["env"] == {"TPM2TOOLS_TCTI": f"swtpm:host=127.0.0.1,port={port}",
                               "PATH": "/usr/bin:/bin"}
    assert public == b"\x00\x04" + scratch.encode()
    assert (state / "srk.pub").read_bytes() == public
    assert (tpm_tools.folder / "swtpm.stopped").read_text() == str(int(signal.SIGTERM))
    assert capfd.readouterr() == ("", "")  # nothing of swtpm's reaches the user's terminal


def test_the_srk_public_part_is_written_whole_or_not_at_all(
        tmp_path: Path, tpm_tools: Tools, monkeypatch: pytest.MonkeyPatch, umask: None) -> None:
    state = tmp_path / "state"
    tpm_setup(state)
    assert (state / "srk.pub").stat().st_mode & 0o777 == 0o644  # a public key

    def full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    other = tmp_path / "other"
    with pytest.raises(OSError) as caught:
        tpm_setup(other)
    assert caught.value.filename == str(other / "srk.pub")
    assert sorted(p.name for p in other.iterdir()) == ["tpm2-00.permall"]  # no part of it


def test_an_existing_tpm_is_never_overwritten(tmp_path: Path, tpm_tools: Tools) -> None:
    state = tmp_path / "state"
    state.mkdir()
    tpm_setup(state)  # an empty folder is taken
    with pytest.raises(UsageError) as caught:
        tpm_setup(state)
    assert str(caught.value) == f"{state} is not empty: a TPM state is never overwritten"
    assert len(tpm_tools.calls("swtpm_setup")) == 1


@pytest.mark.parametrize("failing", ["tpm2_createprimary", "tpm2_readpublic", "tpm2_shutdown"])
def test_a_tpm_tool_that_fails_is_named_and_the_server_stopped(
    tmp_path: Path, tpm_tools: Tools, failing: str,
) -> None:
    tpm_tools.behave(fail=failing)
    with pytest.raises(ExternalToolError) as caught:
        tpm_setup(tmp_path / "state")
    assert str(caught.value) == f"{failing}: " + ("y" * 400 + "the TPM said no")[-300:]
    assert (tpm_tools.folder / "swtpm.stopped").exists()
    assert not (tmp_path / "state" / "srk.pub").exists()
    names = ["tpm2_createprimary", "tpm2_readpublic", "tpm2_shutdown"]
    assert [n for n in names if tpm_tools.calls(n)] == names[:names.index(failing) + 1]


def test_swtpm_setup_that_fails_is_an_error(tmp_path: Path, tpm_tools: Tools) -> None:
    tpm_tools.behave(setup_exit=1, setup_stderr="z" * 400 + "cannot create the state\n")
    with pytest.raises(ExternalToolError) as caught:
        tpm_setup(tmp_path / "state")
    assert str(caught.value) == "swtpm_setup: " + ("z" * 400 + "cannot create the state")[-300:]
    assert tpm_tools.calls("swtpm") == []


def test_the_tools_wait_for_the_tpm_to_listen(tmp_path: Path, tpm_tools: Tools,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    connects: list[int] = []
    pair = free_port_pair()
    monkeypatch.setattr(qemu, "free_port_pair", lambda: pair)

    class Probe:
        def __enter__(self) -> Probe:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def connect_ex(self, address: tuple[str, int]) -> int:
            connects.append(address[1])
            return 0 if len(connects) > 3 else 111  # listening at the fourth try

    class Module:
        socket = Probe

    naps: list[float] = []
    monkeypatch.setattr(qemu, "socket", Module)
    monkeypatch.setattr(qemu, "time", Clock(naps))
    tpm_setup(tmp_path / "state")
    assert connects == [pair] * 4 and naps == [0.05] * 3
    # a TPM that never listens: 100 tries, then the tools run anyway (and say what failed)
    connects.clear()
    naps.clear()
    monkeypatch.setattr(Probe, "connect_ex", lambda self, address: connects.append(1) or 111)
    tpm_setup(tmp_path / "other")
    assert len(connects) == 100 and naps == [0.05] * 100
    assert len(tpm_tools.calls("tpm2_shutdown")) == 2


def test_a_tool_that_hangs_is_stopped_in_one_line(tmp_path: Path, tpm_tools: Tools,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu, "TOOL_TIMEOUT_S", 0.5)
    tpm_tools.behave(hang="tpm2_readpublic")
    with pytest.raises(ExternalToolError) as caught:
        tpm_setup(tmp_path / "state")
    assert str(caught.value) == "tpm2_readpublic did not finish within 0.5 s"
    assert (tpm_tools.folder / "swtpm.stopped").exists()
    assert qemu.TOOL_TIMEOUT_S == 0.5 and (qemu.BOOT_TIMEOUT_S, qemu.STOP_TIMEOUT_S) == (600, 10)


def test_swtpm_that_ignores_sigterm_is_killed(tmp_path: Path, tpm_tools: Tools,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu, "STOP_TIMEOUT_S", 0.3)
    tpm_tools.behave(deaf=True)
    started = time.monotonic()
    assert tpm_setup(tmp_path / "state") == (tmp_path / "state" / "srk.pub").read_bytes()
    assert time.monotonic() - started < 30  # not the minute the deaf swtpm would sleep
    assert not (tpm_tools.folder / "swtpm.stopped").exists()
    assert _swtpm_gone(tpm_tools)
