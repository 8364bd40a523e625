"""Real tools agree with the image: cryptsetup reads the root's LUKS2 header (and opens it with
the recovery key), sbverify checks every signed stage, GNU cpio reads the initramfs, gdisk the
GPT."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from cvm.crypto.x509_edk2 import pem
from cvm.formats.cpio import CpioArchive
from cvm.image.bundle import BuiltImage

pytestmark = pytest.mark.interop


def _root_partition(built: BuiltImage, tmp_path: Path) -> Path:
    layout = built.plan.layout
    with (built.out / "disk.img").open("rb") as disk:
        disk.seek(layout.root_offset)
        data = disk.read(layout.root_size)
    path = tmp_path / "root.img"
    path.write_bytes(data)
    return path


def test_cryptsetup_reads_the_root_header_and_its_tokens(
        built: BuiltImage, tmp_path: Path, require_tool: Callable[[str], str]) -> None:
    tool = require_tool("cryptsetup")
    root = _root_partition(built, tmp_path)
    dump = subprocess.run([tool, "luksDump", str(root)], capture_output=True, text=True,
                          check=True).stdout
    assert built.manifest["disk"]["root"]["luks_uuid"] in dump
    assert "systemd-tpm2" in dump
    metadata = json.loads(subprocess.run(
        [tool, "luksDump", "--dump-json-metadata", str(root)], capture_output=True, text=True,
        check=True).stdout)
    assert sorted(metadata["keyslots"]) == sorted(
        ["0", *[str(t["keyslot"]) for t in built.manifest["tokens"]]])
    assert {t["type"] for t in metadata["tokens"].values()} == {"systemd-tpm2"}
    opened = subprocess.run(
        [tool, "open", "--test-passphrase", "--key-file", str(built.out / "owner/recovery.key"),
         str(root)], capture_output=True, text=True, check=False)
    assert opened.returncode == 0, opened.stderr
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(b"not the recovery key")
    refused = subprocess.run([tool, "open", "--test-passphrase", "--key-file", str(wrong),
                              str(root)], capture_output=True, text=True, check=False)
    assert refused.returncode != 0


def test_sbverify_accepts_every_signed_stage(
        built: BuiltImage, tmp_path: Path, require_tool: Callable[[str], str]) -> None:
    tool = require_tool("sbverify")
    signers = {"db": built.keys.db.certificate}
    if built.keys.vendor is not None:
        signers["vendor"] = built.keys.vendor.certificate
    for stage in built.chain.stages:
        if stage.signer is None:
            continue
        image, cert = tmp_path / f"{stage.name}.efi", tmp_path / f"{stage.signer}.crt"
        image.write_bytes(stage.data)
        cert.write_bytes(pem(signers[stage.signer]))
        done = subprocess.run([tool, "--cert", str(cert), str(image)], capture_output=True,
                              text=True, check=False)
        assert done.returncode == 0, (stage.name, done.stderr)


def test_gnu_cpio_lists_the_initramfs(
        built: BuiltImage, tmp_path: Path, require_tool: Callable[[str], str]) -> None:
    tool = require_tool("cpio")
    initrd = next(s for s in built.chain.stages if s.name == "initramfs").data
    listing = subprocess.run([tool, "-t", "--quiet"], input=initrd, capture_output=True,
                             check=True).stdout.decode().split()
    assert listing == [e.name for e in CpioArchive.parse(initrd).entries]


def test_gdisk_sees_the_esp_and_the_root(
        built: BuiltImage, require_tool: Callable[[str], str]) -> None:
    tool = require_tool("sgdisk")
    text = subprocess.run([tool, "-p", str(built.out / "disk.img")], capture_output=True,
                          text=True, check=True).stdout
    assert "EF00" in text and "8304" in text
    assert "Problem" not in text


@pytest.mark.parametrize("mode", ["sev", "sev-es", "sev-snp"])
def test_sev_snp_measure_predicts_the_same_launch_digests(
        built_images: dict[str, BuiltImage], mode: str,
        require_tool: Callable[[str], str]) -> None:
    import sys

    beside = Path(sys.executable).parent / "sev-snp-measure"
    oracle = str(beside) if beside.exists() else require_tool("sev-snp-measure")
    out = built_images["uki"].out
    args = ["--ovmf", str(out / "firmware/OVMF.fd")]
    if mode == "sev-snp":
        args = ["--mode", "snp:svsm", *args, "--svsm", str(out / "firmware/SVSM.bin"),
                "--vars-size", str((out / "firmware/OVMF_VARS.fd").stat().st_size),
                "--vcpus", "1", "--vcpu-type", "EPYC-Milan"]
    elif mode == "sev-es":
        args = ["--mode", "seves", *args, "--vcpus", "1", "--vcpu-type", "EPYC-Milan"]
    else:
        args = ["--mode", "sev", *args]
    done = subprocess.run([oracle, *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == built_images["uki"].reference.launch_digest(mode, 1).hex()
