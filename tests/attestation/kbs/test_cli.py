"""``cvm attest fetch`` against the broker on loopback, and ``cvm kbs`` argument checks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cvm.cli.main import execute
from cvm.scenarios.attested_guest import Owner

from .conftest import SECRET, SECRET_PATH, Kbs


def _owner_dir(owner: Owner, folder: Path) -> Path:
    folder.mkdir()
    (folder / "uki.efi").write_bytes(owner.image.uki)
    (folder / "OVMF_VARS.fd").write_bytes(owner.image.varstore.to_bytes())
    return folder


def test_fetch_releases_to_the_genuine_image_only(kbs: Kbs, owner: Owner, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    folder = _owner_dir(owner, tmp_path / "owner")
    out = tmp_path / "secret.bin"
    assert execute(["attest", "fetch", kbs.url, "--resource", SECRET_PATH, "--owner",
                    str(folder), "--out", str(out)]) == 0
    assert out.read_bytes() == SECRET and out.stat().st_mode & 0o077 == 0
    capsys.readouterr()
    assert execute(["attest", "fetch", kbs.url, "--resource", SECRET_PATH, "--owner",
                    str(folder), "--old-tcb"]) == 1
    err = capsys.readouterr().err
    assert "401" in err and "attestation failed" in err and "tcb" not in err
    assert execute(["attest", "fetch", kbs.url, "--resource", "not/a-path"]) == 64


def test_serve_refuses_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    assert execute(["kbs", "serve", "--workers", "0"]) == 64
    assert execute(["kbs", "serve", "--db", "mysql://x", "--kek-file",
                    str(tmp_path / "k"), "--admin-token-file", str(tmp_path / "t")]) == 64
    assert "sqlite:///FILE or postgresql" in capsys.readouterr().err
    bad = tmp_path / "bad-kek"
    bad.write_text("not hex")
    assert execute(["kbs", "serve", "--kek-file", str(bad)]) == 64


def test_admin_registers_and_reads_the_audit_log(kbs: Kbs, owner: Owner, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from .conftest import ADMIN_TOKEN

    token = tmp_path / "admin.token"
    token.write_text(ADMIN_TOKEN + "\n")
    value = tmp_path / "value.bin"
    value.write_bytes(b"another secret")
    policy = tmp_path / "policy.rego"
    policy.write_text("package cvm.policy\nimport rego.v1\ndefault allow := false\n"
                      "deny contains f if { some f in input.findings }\n"
                      "allow if count(deny) == 0\n")
    assert execute(["kbs", "admin", kbs.url, "--admin-token-file", str(token), "--secret",
                    f"default/other/one={value}", "--policy", str(policy), "--audit"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert any(row["action"] == "admin" and row["subject"] == "default/other/one"
               for row in rows)
    token.write_text("wrong token for the admin api\n")
    assert execute(["kbs", "admin", kbs.url, "--admin-token-file", str(token), "--audit"]) == 64
    assert "401" in capsys.readouterr().err


def test_serve_refuses_roots_it_does_not_know(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert execute(["kbs", "serve", "--trust", "anything", "--kek-file", str(tmp_path / "k"),
                    "--admin-token-file", str(tmp_path / "t")]) == 64
    assert capsys.readouterr().err == "cvm: error: --trust must be amd or emulated, not " \
                                      "'anything'\n"


@pytest.mark.parametrize(("given", "label"), [(None, "amd"), ("amd", "amd"),
                                              ("emulated", "emulated")])
def test_a_worker_trusts_amds_roots_unless_told_emulated_by_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str | None, label: str) -> None:
    from cvm.amd.root_store import DEFAULT_WORKSPACE, RootStore
    from cvm.attestation.kbs.broker import Broker
    from cvm.cli import kbs as kbs_cli

    RootStore.for_workspace(DEFAULT_WORKSPACE).root("Milan", create=True)
    made: list[Broker] = []
    monkeypatch.setattr("cvm.attestation.kbs.app.create_app",
                        lambda broker, token: made.append(broker))
    (tmp_path / "kek.hex").write_text("00" * 32 + "\n")
    (tmp_path / "admin.token").write_text("t" * 32 + "\n")
    monkeypatch.setenv(kbs_cli.ENV_DB, f"sqlite:///{tmp_path / 'kbs.db'}")
    monkeypatch.setenv(kbs_cli.ENV_KEK, str(tmp_path / "kek.hex"))
    monkeypatch.setenv(kbs_cli.ENV_ADMIN, str(tmp_path / "admin.token"))
    if given is None:
        monkeypatch.delenv(kbs_cli.ENV_TRUST, raising=False)
    else:
        monkeypatch.setenv(kbs_cli.ENV_TRUST, given)
    kbs_cli.app_from_environment()
    assert made[0].roots.label == label


def _serve(tmp_path: Path, *more: str) -> int:
    return execute(["kbs", "serve", "--kek-file", str(tmp_path / "kek.hex"),
                    "--admin-token-file", str(tmp_path / "admin.token"),
                    "--db", f"sqlite:///{tmp_path / 'kbs.db'}", *more])


@pytest.mark.parametrize("port", ["-1", "65536", "99999"])
def test_serve_refuses_a_port_out_of_range_before_making_any_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], port: str) -> None:
    assert _serve(tmp_path, "--port", port) == 64
    assert capsys.readouterr().err == f"cvm: error: --port {port} is not a TCP port (0..65535)\n"
    assert not (tmp_path / "kek.hex").exists() and not (tmp_path / "admin.token").exists()


def test_serve_refuses_a_host_that_is_not_an_address(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert _serve(tmp_path, "--host", "not an address!") == 64
    err = capsys.readouterr().err
    assert err.startswith("cvm: error: --host 'not an address!': not an address (")
    assert err.count("\n") == 1


def test_serve_says_in_one_line_that_the_port_is_taken(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert _serve(tmp_path, "--port", str(port)) == 74
    assert capsys.readouterr().err == (f"cvm: error: cannot listen: Address already in use: "
                                       f"127.0.0.1:{port}\n")


@pytest.mark.parametrize(("code", "exit_code"), [(3, 74), (1, 74), (0, 0), (None, 0)])
def test_uvicorns_own_exit_is_an_exit_code_cvm_documents(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        code: int | None, exit_code: int) -> None:
    import uvicorn

    def stops(*args: object, **kwargs: object) -> None:
        raise SystemExit(code)
    monkeypatch.setattr(uvicorn, "run", stops)
    assert _serve(tmp_path, "--port", "0") == exit_code
    if exit_code:
        assert re.fullmatch(r"cvm: error: the broker could not start listening: "
                            r"http://127\.0\.0\.1:[1-9]\d*\n", capsys.readouterr().err)


def test_serve_names_a_database_it_cannot_open_without_its_password(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no" / "such" / "folder" / "kbs.db"
    assert execute(["kbs", "serve", "--kek-file", str(tmp_path / "k"), "--admin-token-file",
                    str(tmp_path / "t"), "--db", f"sqlite:///{missing}"]) == 74
    assert capsys.readouterr().err == ("cvm: error: cannot open the database (unable to open "
                                       f"database file): sqlite:///{missing}\n")
    assert execute(["kbs", "serve", "--kek-file", str(tmp_path / "k"), "--admin-token-file",
                    str(tmp_path / "t"), "--db",
                    "postgresql+psycopg://cvm:hunter2secret@127.0.0.1:1/kbs"]) == 74
    err = capsys.readouterr().err
    assert err.startswith("cvm: error: cannot open the database (") and err.count("\n") == 1
    assert err.endswith("): postgresql+psycopg://cvm:***@127.0.0.1:1/kbs\n")
    assert "hunter2" not in err
