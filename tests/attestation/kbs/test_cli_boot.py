"""``cvm image register IMAGE --kbs URL`` and ``cvm vm run IMAGE --kbs URL``: the commands, their
output and exit codes, against a broker that trusts this installation's emulated AMD root (as
``cvm kbs serve --trust emulated`` does)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from cvm.amd.root_store import DEFAULT_WORKSPACE, RootStore
from cvm.attestation.kbs.broker import Broker
from cvm.attestation.kbs.storage import Storage
from cvm.attestation.verifier.trust import TrustRoots
from cvm.cli.main import execute
from cvm.host.adversary.launch import FIRMWARE_BIT
from cvm.image.bundle import ImageSpec, build_image

from .conftest import ADMIN_TOKEN, free_port, serving


@pytest.fixture(scope="module")
def installation_kbs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = RootStore.for_workspace(DEFAULT_WORKSPACE)
    store.root("Milan", create=True)
    roots = TrustRoots.of(store.trust_anchors(), "emulated")
    url = f"sqlite:///{tmp_path_factory.mktemp('kbs-cli') / 'kbs.db'}"
    with serving(Broker(Storage(url), bytes(range(32)), roots)) as address:
        yield address


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kbs-cli-image") / "image"
    build_image(out, ImageSpec(kdf_cost="fast", seed=31))
    return out


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("token") / "kbs-admin.token"
    path.write_text(ADMIN_TOKEN + "\n")
    return path


def test_register_then_boot_through_the_broker(
        installation_kbs: str, image: Path, token_file: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["image", "register", str(image), "--kbs", installation_kbs,
                    "--admin-token-file", str(token_file)]) == 0
    out = capsys.readouterr().out
    assert "the vTPM state key at default/vtpm/state-key" in out
    assert "not checked: minimum_tcb" in out
    bundle = Path(shutil.copytree(image, tmp_path / "image"))
    assert execute(["vm", "run", str(bundle), "--kbs", installation_kbs]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "key broker released the vTPM state key" in out
    assert "OK: every stage verified" in out

    firmware = bytearray((bundle / "firmware" / "OVMF.fd").read_bytes())
    firmware[FIRMWARE_BIT // 8] ^= 1 << (FIRMWARE_BIT % 8)
    (bundle / "firmware" / "OVMF.fd").write_bytes(firmware)
    assert execute(["vm", "run", str(bundle), "--kbs", installation_kbs]) == 67
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["cvm: error: svsm: the key broker refused POST /kbs/v0/attest "
                   "(401 AttestationFailed: attestation failed)"]


def test_register_with_a_wrong_token_and_an_unreachable_broker(
        installation_kbs: str, image: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-admin-token\n")
    assert execute(["image", "register", str(image), "--kbs", installation_kbs,
                    "--admin-token-file", str(wrong)]) == 64
    assert "admin token" in capsys.readouterr().err
    nowhere = f"http://127.0.0.1:{free_port()}"
    assert execute(["image", "register", str(image), "--kbs", nowhere,
                    "--admin-token-file", str(wrong)]) == 70
    assert "cannot reach the key broker" in capsys.readouterr().err
    assert execute(["image", "register", str(image), "--kbs", installation_kbs,
                    "--admin-token-file", str(tmp_path / "missing")]) == 74  # the OS's error
    assert str(tmp_path / "missing") in capsys.readouterr().err


def test_vm_run_kbs_errors(image: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    bundle = Path(shutil.copytree(image, tmp_path / "image"))
    nowhere = f"http://127.0.0.1:{free_port()}"
    assert execute(["vm", "run", str(bundle), "--kbs", nowhere]) == 70
    assert "cannot reach the key broker at 127.0.0.1" in capsys.readouterr().err
    assert execute(["vm", "run", str(bundle), "--kbs", "https://kbs.example"]) == 64
    assert execute(["vm", "run", str(bundle), "--kbs", nowhere, "--mode", "sev"]) == 64
    assert "sev-snp" in capsys.readouterr().err
    assert execute(["vm", "run", str(bundle), "--kbs", nowhere, "--backend", "qemu"]) == 64
