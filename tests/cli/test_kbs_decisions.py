"""``cvm kbs``, one decision at a time: the options ``serve`` refuses before any file is made,
the key-encryption key and admin token (created 0600, strictly read), the address, the workers'
environment, uvicorn's start and exit; ``admin``'s requests, each answer checked.

The broker itself is tested in ``tests/attestation/kbs``; here uvicorn's ``run`` and the admin
API are replaced by recorders."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import stat
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from cvm.cli import kbs
from cvm.cli.main import execute
from cvm.errors import UsageError

KEK = "ab" * 32


def _files(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "kek.hex", tmp_path / "admin.token"


def _prepare(tmp_path: Path, **given: Any) -> dict[str, str]:
    kek, token = _files(tmp_path)
    options: dict[str, Any] = {"db": f"sqlite:///{tmp_path / 'kbs.db'}", "host": "127.0.0.1",
                               "port": 0, "workers": 1, "kek_file": kek,
                               "admin_token_file": token, "trust": "amd", **given}
    return kbs.prepare(**options)


@pytest.mark.parametrize("trust", ["amd", "emulated"])
def test_the_roots_are_amds_or_the_emulated_amd_by_name(trust: str) -> None:
    assert kbs.check_trust(trust) == trust


@pytest.mark.parametrize("trust", ["AMD", "emulate", "", "amd ", "both"])
def test_any_other_root_is_refused(trust: str) -> None:
    with pytest.raises(UsageError) as refused:
        kbs.check_trust(trust)
    assert str(refused.value) == f"--trust must be amd or emulated, not {trust!r}"


@pytest.mark.parametrize("port", [0, 1, 8080, 65535])
def test_a_tcp_port_is_0_to_65535(port: int) -> None:
    kbs.check_port(port)


@pytest.mark.parametrize("port", [-1, 65536])
def test_a_port_outside_is_refused(port: int) -> None:
    with pytest.raises(UsageError) as refused:
        kbs.check_port(port)
    assert str(refused.value) == f"--port {port} is not a TCP port (0..65535)"


@pytest.mark.parametrize(("given", "says"), [
    ({"workers": 0, "trust": "x", "port": -1}, "--workers: 0 is not between 1 and 64"),
    ({"workers": 65}, "--workers: 65 is not between 1 and 64"),
    ({"trust": "x", "port": -1}, "--trust must be amd or emulated, not 'x'"),
    ({"port": 70000}, "--port 70000 is not a TCP port (0..65535)"),
])
def test_the_options_are_checked_in_order_before_any_file_is_made(
        tmp_path: Path, given: dict[str, Any], says: str) -> None:
    with pytest.raises(UsageError) as refused:
        _prepare(tmp_path, **given)
    assert str(refused.value) == says
    assert list(tmp_path.iterdir()) == []


def test_serve_makes_the_key_the_token_and_the_tables_then_returns_the_workers_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    environment = kbs.prepare(f"sqlite:///{tmp_path / 'kbs.db'}", "127.0.0.1", 0, 64,
                              Path("sub/kek.hex"), Path("sub/admin.token"), "emulated")
    assert environment == {
        "CVM_KBS_DB": f"sqlite:///{tmp_path / 'kbs.db'}",
        "CVM_KBS_KEK_FILE": str(tmp_path / "sub" / "kek.hex"),
        "CVM_KBS_ADMIN_TOKEN_FILE": str(tmp_path / "sub" / "admin.token"),
        "CVM_KBS_TRUST": "emulated"}
    assert (tmp_path / "kbs.db").stat().st_size > 0
    for name in ("kek.hex", "admin.token"):
        assert stat.S_IMODE((tmp_path / "sub" / name).stat().st_mode) == 0o600


def test_a_database_that_cannot_open_is_refused_before_the_address(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(OSError) as refused:
        _prepare(tmp_path, db=f"sqlite:///{tmp_path / 'no' / 'kbs.db'}")
    assert "cannot open the database" in str(refused.value)
    kek, token = _files(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for db, says in ((f"sqlite:///{tmp_path / 'no' / 'kbs.db'}", "cannot open the database"),
                         (f"sqlite:///{tmp_path / 'kbs.db'}", f"127.0.0.1:{port}")):
            assert execute(["kbs", "serve", "--kek-file", str(kek), "--admin-token-file",
                            str(token), "--db", db, "--port", str(port)]) == 74
            assert says in capsys.readouterr().err


def test_a_bad_key_is_refused_before_the_token_is_made(tmp_path: Path) -> None:
    kek, token = _files(tmp_path)
    kek.write_text("00" * 31 + "\n")
    with pytest.raises(UsageError) as refused:
        _prepare(tmp_path)
    assert str(refused.value) == f"{kek}: the key-encryption key must be 64 hex digits"
    assert not token.exists()


def test_a_short_token_is_refused_before_the_tables_are_made(tmp_path: Path) -> None:
    kek, token = _files(tmp_path)
    token.write_text("x" * 15)
    with pytest.raises(UsageError) as refused:
        _prepare(tmp_path)
    assert str(refused.value) == f"{token}: the admin token must be at least 16 characters"
    assert kek.exists() and not (tmp_path / "kbs.db").exists()


def test_a_new_key_is_32_random_bytes_in_hex_written_0600(tmp_path: Path) -> None:
    path = tmp_path / "kek.hex"
    first = kbs.load_kek(path)
    assert len(first) == 32 and path.read_text() == first.hex() + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert kbs.load_kek(path) == first
    assert kbs.load_kek(tmp_path / "other.hex") != first


@pytest.mark.parametrize("text", [KEK, f"  {KEK}\n", KEK.upper()])
def test_an_existing_key_is_read_as_it_is(tmp_path: Path, text: str) -> None:
    path = tmp_path / "kek.hex"
    path.write_text(text)
    path.chmod(0o640)
    assert kbs.load_kek(path) == bytes.fromhex(KEK)
    assert path.read_text() == text and stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.parametrize("text", ["", "ab" * 31, "ab" * 33, "zz" * 32, "a" * 63])
def test_a_key_that_is_not_64_hex_digits_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "kek.hex"
    path.write_text(text)
    with pytest.raises(UsageError) as refused:
        kbs.load_kek(path)
    assert str(refused.value) == f"{path}: the key-encryption key must be 64 hex digits"


def test_a_new_token_is_url_safe_and_long_written_0600(tmp_path: Path) -> None:
    path = tmp_path / "admin.token"
    token = kbs.load_admin_token(path)
    assert len(token) == 43 and path.read_text() == token + "\n"
    assert len(base64.urlsafe_b64decode(token + "=")) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert kbs.load_admin_token(path) == token


@pytest.mark.parametrize(("text", "token"), [("t" * 16, "t" * 16), (" " + "t" * 16 + "\n",
                                                                   "t" * 16)])
def test_a_token_of_16_characters_is_taken(tmp_path: Path, text: str, token: str) -> None:
    path = tmp_path / "admin.token"
    path.write_text(text)
    assert kbs.load_admin_token(path) == token


@pytest.mark.parametrize("text", ["", "t" * 15, " " * 20 + "t" * 15 + "\n"])
def test_a_shorter_token_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "admin.token"
    path.write_text(text)
    with pytest.raises(UsageError) as refused:
        kbs.load_admin_token(path)
    assert str(refused.value) == f"{path}: the admin token must be at least 16 characters"


def test_a_secret_file_is_created_once_and_never_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    assert kbs._secret_file(path, b"first") == b"first"
    assert kbs._secret_file(path, b"second") == b"first"
    assert path.read_bytes() == b"first" and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_key_that_cannot_be_written_leaves_no_file_and_says_which(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        full_disk: Callable[[int], AbstractContextManager[None]]) -> None:
    """A disk that fills as the key is written leaves no empty or half key to be refused at
    the next start: the next start makes it whole."""
    kek, token = _files(tmp_path)
    argv = ["kbs", "serve", "--db", f"sqlite:///{tmp_path / 'kbs.db'}", "--port", "0",
            "--kek-file", str(kek), "--admin-token-file", str(token), "--trust", "emulated"]
    with full_disk(20):
        assert execute(argv) == 74
    assert capsys.readouterr() == ("", f"cvm: error: File too large: {kek}\n")
    assert list(tmp_path.iterdir()) == []
    assert len(kbs.load_kek(kek)) == 32


def test_a_secret_file_made_meanwhile_by_another_process_is_theirs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret"
    real = kbs.write_new

    def raced(target: Path, data: bytes) -> None:
        target.write_bytes(b"theirs")  # the other process, between the read and the write
        real(target, data)
    monkeypatch.setattr(kbs, "write_new", raced)
    assert kbs._secret_file(path, b"mine") == b"theirs"
    assert path.read_bytes() == b"theirs" and [p.name for p in tmp_path.iterdir()] == ["secret"]


def test_an_existing_secret_file_is_read_without_writing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key in a folder the broker may not write to (read-only configuration) is read."""
    path = tmp_path / "secret"
    path.write_bytes(b"kept")

    def refused(target: Path, data: bytes) -> None:
        raise PermissionError(13, "Permission denied", str(target))
    monkeypatch.setattr(kbs, "write_new", refused)
    assert kbs._secret_file(path, b"new") == b"kept"


def test_a_host_that_is_not_an_address_is_refused_in_one_line() -> None:
    with pytest.raises(UsageError) as refused:
        kbs.listen("not an address!", 0)
    assert str(refused.value).startswith("--host 'not an address!': not an address (")
    with pytest.raises(UsageError) as refused:
        kbs.listen("a" * 64 + ".example", 0)
    assert str(refused.value).startswith(f"--host {'a' * 64 + '.example'!r}: not an address (")


@pytest.mark.parametrize(("host", "family"), [("127.0.0.1", socket.AF_INET),
                                               ("localhost", socket.AF_INET)])
def test_a_free_address_is_bound_and_listens(host: str, family: int) -> None:
    with kbs.listen(host, 0) as listener:
        port = listener.getsockname()[1]
        assert port != 0 and listener.family == family
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the connection waits in the backlog until a worker accepts it
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for _ in range(2):  # closed, the address is free again
        with kbs.listen("127.0.0.1", port) as listener:
            assert listener.getsockname() == ("127.0.0.1", port)


def test_the_backlog_is_uvicorns() -> None:
    assert kbs.LISTEN_BACKLOG == 2048


class _Listener:
    family = socket.AF_INET6

    def getsockname(self) -> tuple[str, int, int, int]:
        return ("::1", 8443, 0, 0)


def test_an_ipv6_listener_is_named_in_brackets() -> None:
    assert kbs.url_of(_Listener()) == "http://[::1]:8443"  # type: ignore[arg-type]
    with kbs.listen("127.0.0.1", 0) as listener:
        assert kbs.url_of(listener) == f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_an_address_in_use_is_the_os_error_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as refused:
            kbs.listen("127.0.0.1", port)
    assert refused.value.errno == 98 and refused.value.filename == f"127.0.0.1:{port}"
    assert refused.value.strerror == "cannot listen: Address already in use"


def test_an_address_left_in_time_wait_is_taken_as_uvicorn_would() -> None:
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its end waits in TIME_WAIT
        client.recv(1)
        client.close()
    kbs.listen("127.0.0.1", port).close()


def test_the_workers_environment_names_the_files_by_absolute_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert kbs.worker_environment("sqlite:///x.db", Path("k"), Path("t"), "amd") == {
        kbs.ENV_DB: "sqlite:///x.db", kbs.ENV_KEK: str(tmp_path / "k"),
        kbs.ENV_ADMIN: str(tmp_path / "t"), kbs.ENV_TRUST: "amd"}


def test_uvicorn_runs_the_workers_factory_on_the_address(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    import uvicorn

    calls: list[tuple[tuple[object, ...], dict[str, object]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append((args, kwargs)))
    with kbs.listen("127.0.0.1", 0) as listener:
        kbs.start(listener, 3)
        assert calls == [(("cvm.cli.kbs:app_from_environment",), {
            "factory": True, "fd": listener.fileno(), "workers": 3, "log_level": "warning",
            "access_log": False, "proxy_headers": False})]


@pytest.mark.parametrize("code", [1, 3, "stop"])
def test_uvicorns_failed_start_is_the_os_error_naming_the_address(
        monkeypatch: pytest.MonkeyPatch, code: object) -> None:
    import uvicorn

    def stops(*args: object, **kwargs: object) -> None:
        raise SystemExit(code)
    monkeypatch.setattr(uvicorn, "run", stops)
    with kbs.listen("127.0.0.1", 0) as listener:
        with pytest.raises(OSError) as refused:
            kbs.start(listener, 1)
        assert refused.value.errno == 99 and refused.value.filename == kbs.url_of(listener)
    assert refused.value.strerror == "the broker could not start listening"
    assert refused.value.__suppress_context__


@pytest.mark.parametrize("code", [0, None])
def test_uvicorns_clean_exit_is_a_return(monkeypatch: pytest.MonkeyPatch, code: object) -> None:
    import uvicorn

    def stops(*args: object, **kwargs: object) -> None:
        raise SystemExit(code)
    monkeypatch.setattr(uvicorn, "run", stops)
    with kbs.listen("127.0.0.1", 0) as listener:
        kbs.start(listener, 1)


def test_serve_exports_the_environment_and_starts_uvicorn(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import uvicorn

    for name in (kbs.ENV_DB, kbs.ENV_KEK, kbs.ENV_ADMIN, kbs.ENV_TRUST):
        monkeypatch.delenv(name, raising=False)
    seen: list[dict[str, object]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: seen.append(
        {**kwargs, "trust": os.environ[kbs.ENV_TRUST]}))
    kek, token = _files(tmp_path)
    assert execute(["kbs", "serve", "--kek-file", str(kek), "--admin-token-file", str(token),
                    "--db", f"sqlite:///{tmp_path / 'kbs.db'}", "--port", "0", "--workers", "2",
                    "--trust", "emulated"]) == 0
    assert seen[0]["workers"] == 2 and seen[0]["trust"] == "emulated"
    assert os.environ[kbs.ENV_KEK] == str(kek)
    line = capsys.readouterr().out
    port = int(re.fullmatch(r"serving the key broker at http://127\.0\.0\.1:(\d+) \(database "
                            r"sqlite:///\S+kbs\.db, admin token in \S+\); Ctrl-C stops it\n",
                            line)[1])  # type: ignore[index]
    assert port != 0


def test_the_served_line_hides_the_databases_password(tmp_path: Path) -> None:
    with kbs.listen("127.0.0.1", 0) as listener:
        line = kbs.serving_line(listener, "postgresql+psycopg://kbs:s3cret@db:5432/kbs",
                                tmp_path / "t")
        assert line == (f"serving the key broker at {kbs.url_of(listener)} (database "
                        f"postgresql+psycopg://kbs:***@db:5432/kbs, admin token in "
                        f"{tmp_path / 't'}); Ctrl-C stops it")


# ``admin``


@pytest.mark.parametrize(("item", "path", "file"), [
    ("default/disk/key=f.bin", "default/disk/key", "f.bin"),
    ("a/b/c=x=y", "a/b/c", "x=y")])
def test_a_secret_is_a_path_and_a_file(item: str, path: str, file: str) -> None:
    assert kbs.parse_secret(item) == (path, Path(file))


@pytest.mark.parametrize("item", ["default/disk/key", "default/disk/key="])
def test_a_secret_without_its_file_is_refused(item: str) -> None:
    with pytest.raises(UsageError) as refused:
        kbs.parse_secret(item)
    assert str(refused.value) == f"--secret {item!r} is not REPOSITORY/TYPE/TAG=FILE"


@pytest.mark.parametrize("status", [200, 201, 204, 399])
def test_an_answer_below_400_is_taken(status: int) -> None:
    kbs.check_answer(status, "whatever", "policy")


@pytest.mark.parametrize("status", [400, 401, 500])
def test_an_answer_of_400_or_more_is_refused_with_its_start(status: int) -> None:
    with pytest.raises(UsageError) as refused:
        kbs.check_answer(status, "x" * 200 + "y", "secret a/b/c")
    assert str(refused.value) == f"secret a/b/c: the broker answered {status} {'x' * 200}"


def test_a_policy_is_the_default_rego_policy_in_base64() -> None:
    assert kbs.policy_body(b"package p\n") == {
        "type": "rego", "policy_id": "default",
        "policy": base64.b64encode(b"package p\n").decode()}


class Admin:
    """The admin API, recording each request; ``fail`` names a path answered 403."""

    def __init__(self, fail: str = "") -> None:
        self.fail = fail
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == self.fail:
            return httpx.Response(403, text="no")
        if request.url.path == "/kbs/v0/audit":
            return httpx.Response(200, json=[{"action": "admin"}])
        return httpx.Response(200)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url="http://kbs", transport=httpx.MockTransport(self))


def test_admin_sends_each_request_in_order_and_returns_the_audit(tmp_path: Path) -> None:
    (tmp_path / "one").write_bytes(b"first")
    (tmp_path / "two").write_bytes(b"second")
    (tmp_path / "ref.json").write_bytes(b'{"x": 1}')
    (tmp_path / "p.rego").write_bytes(b"package p")
    admin = Admin()
    rows = kbs.administer(admin.client(), [f"a/b/c={tmp_path / 'one'}",
                                           f"d/e/f={tmp_path / 'two'}"],
                          tmp_path / "ref.json", tmp_path / "p.rego", True)
    assert rows == [{"action": "admin"}]
    assert [(r.method, r.url.path, r.url.query) for r in admin.requests] == [
        ("POST", "/kbs/v0/resource/a/b/c", b""), ("POST", "/kbs/v0/resource/d/e/f", b""),
        ("POST", "/kbs/v0/reference-values", b""), ("POST", "/kbs/v0/attestation-policy", b""),
        ("GET", "/kbs/v0/audit", b"limit=1000")]
    bodies = [r.content for r in admin.requests]
    assert bodies[:3] == [b"first", b"second", b'{"x": 1}']
    assert admin.requests[2].headers["content-type"] == "application/json"
    assert json.loads(bodies[3]) == kbs.policy_body(b"package p")


def test_admin_without_audit_returns_nothing_and_asks_nothing(tmp_path: Path) -> None:
    admin = Admin()
    assert kbs.administer(admin.client(), [], None, None, False) is None
    assert admin.requests == []


@pytest.mark.parametrize(("fail", "what"), [
    ("/kbs/v0/resource/a/b/c", "secret a/b/c"), ("/kbs/v0/reference-values", "reference"),
    ("/kbs/v0/attestation-policy", "policy"), ("/kbs/v0/audit", "audit")])
def test_each_refused_request_is_named_and_stops_the_rest(tmp_path: Path, fail: str,
                                                          what: str) -> None:
    for name in ("one", "ref.json", "p.rego"):
        (tmp_path / name).write_bytes(b"{}")
    admin = Admin(fail)
    with pytest.raises(UsageError) as refused:
        kbs.administer(admin.client(), [f"a/b/c={tmp_path / 'one'}"], tmp_path / "ref.json",
                       tmp_path / "p.rego", True)
    assert str(refused.value) == f"{what}: the broker answered 403 no"
    assert admin.requests[-1].url.path == fail


def test_a_malformed_secret_is_refused_before_any_is_registered(tmp_path: Path) -> None:
    (tmp_path / "one").write_bytes(b"first")
    admin = Admin()
    with pytest.raises(UsageError):
        kbs.administer(admin.client(), [f"a/b/c={tmp_path / 'one'}", "d/e/f"], None, None,
                       False)
    assert admin.requests == []


def test_the_admin_client_names_the_broker_and_carries_the_token(tmp_path: Path) -> None:
    token = tmp_path / "admin.token"
    token.write_text("  the-admin-token\n")
    client = kbs._admin("http://kbs:8080/brokerX//", token)
    assert isinstance(client, httpx.Client)
    with client:
        assert str(client.build_request("GET", "/kbs/v0/audit").url) == (
            "http://kbs:8080/brokerX/kbs/v0/audit")
        assert client.headers["authorization"] == "Bearer the-admin-token"
        assert client.timeout == httpx.Timeout(30.0)


def test_admin_prints_the_audit_as_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    admin = Admin()
    monkeypatch.setattr(kbs, "_admin", lambda url, token: admin.client())
    assert execute(["kbs", "admin", "http://kbs", "--audit"]) == 0
    assert capsys.readouterr().out == json.dumps([{"action": "admin"}], indent=1) + "\n"
    assert execute(["kbs", "admin", "http://kbs"]) == 0
    assert capsys.readouterr().out == ""


def test_admin_registers_nothing_when_a_later_secret_is_malformed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "one").write_bytes(b"first")
    admin = Admin()
    monkeypatch.setattr(kbs, "_admin", lambda url, token: admin.client())
    assert execute(["kbs", "admin", "http://kbs", "--secret", f"a/b/c={tmp_path / 'one'}",
                    "--secret", "d/e/f"]) == 64
    assert capsys.readouterr().err == (
        "cvm: error: --secret 'd/e/f' is not REPOSITORY/TYPE/TAG=FILE\n")
    assert admin.requests == []


def test_each_worker_builds_its_broker_and_admin_api_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[tuple[object, object]] = []
    monkeypatch.setattr("cvm.attestation.kbs.app.create_app",
                        lambda broker, token: made.append((broker, token)) or "app")
    (tmp_path / "kek.hex").write_text(KEK + "\n")
    (tmp_path / "admin.token").write_text("the admin token, long enough\n")
    monkeypatch.setenv(kbs.ENV_DB, f"sqlite:///{tmp_path / 'kbs.db'}")
    monkeypatch.setenv(kbs.ENV_KEK, str(tmp_path / "kek.hex"))
    monkeypatch.setenv(kbs.ENV_ADMIN, str(tmp_path / "admin.token"))
    monkeypatch.setenv(kbs.ENV_TRUST, "amd")
    assert kbs.app_from_environment() == "app"
    broker, token = made[0]
    assert token == "the admin token, long enough"
    assert broker.kek == bytes.fromhex(KEK)  # type: ignore[attr-defined]
    assert broker.storage.url == f"sqlite:///{tmp_path / 'kbs.db'}"  # type: ignore[attr-defined]
