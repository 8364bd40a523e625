"""``cvm kbs``: the key broker service, and its administration.

``serve`` runs the broker (FastAPI under uvicorn) on a database shared by all its workers:
SQLite by default, PostgreSQL by URL. The key-encryption key and the admin token are read from
files, created (mode 0600) on first start. ``admin`` registers secrets, reference values and
policies, and reads the audit log, through the authenticated admin API.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from cvm.cli.options import check_workers
from cvm.errors import ExternalToolError, FormatError, UsageError
from cvm.files import write_new

app = typer.Typer(help="The key broker service (Trustee's RCAR protocol).", no_args_is_help=True)
ENV_DB, ENV_KEK, ENV_ADMIN, ENV_TRUST = ("CVM_KBS_DB", "CVM_KBS_KEK_FILE",
                                         "CVM_KBS_ADMIN_TOKEN_FILE", "CVM_KBS_TRUST")


def _secret_file(path: Path, make: bytes) -> bytes:
    """Read a secret file, creating it with ``make`` (mode 0600, whole or not at all: a full
    disk leaves no empty key behind) if it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    try:
        write_new(path, make)
    except FileExistsError:  # another process made it meanwhile: theirs is the key
        return path.read_bytes()
    return make


def _text(data: bytes, path: Path, what: str) -> str:
    """A secret file's text without its line end; bytes that are not text refused naming the
    file."""
    try:
        return data.decode().strip()
    except UnicodeDecodeError:
        raise UsageError(f"{path}: {what} is not text") from None


def token_text(path: Path, option: str) -> str:
    """The admin token in the file ``option`` names, without its line end."""
    try:
        return path.read_bytes().decode().strip()
    except UnicodeDecodeError:
        raise FormatError(f"{option} {path}: not a token (not text)") from None


def load_kek(path: Path) -> bytes:
    text = _text(_secret_file(path, secrets.token_hex(32).encode() + b"\n"), path,
                 "the key-encryption key")
    try:
        kek = bytes.fromhex(text)
    except ValueError:
        raise UsageError(f"{path}: the key-encryption key must be 64 hex digits") from None
    if len(kek) != 32:
        raise UsageError(f"{path}: the key-encryption key must be 64 hex digits")
    return kek


def load_admin_token(path: Path) -> str:
    token = _text(_secret_file(path, secrets.token_urlsafe(32).encode() + b"\n"), path,
                  "the admin token")
    if len(token) < 16:
        raise UsageError(f"{path}: the admin token must be at least 16 characters")
    return token


def app_from_environment() -> object:
    """The ASGI app each uvicorn worker builds (configuration from the environment)."""
    from cvm.attestation.kbs.app import create_app
    from cvm.attestation.kbs.broker import Broker
    from cvm.attestation.kbs.storage import Storage
    from cvm.cli.attest import _roots

    broker = Broker(Storage(os.environ[ENV_DB]), load_kek(Path(os.environ[ENV_KEK])),
                    _roots(os.environ.get(ENV_TRUST, "amd")))
    return create_app(broker, load_admin_token(Path(os.environ[ENV_ADMIN])))


@app.command()
def serve(
    db: Annotated[str, typer.Option(help="Database URL (sqlite:///FILE or "
                                         "postgresql+psycopg://...).")] = "sqlite:///kbs.db",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    workers: Annotated[int, typer.Option(help="Worker processes sharing the database.")] = 1,
    kek_file: Annotated[Path, typer.Option(help="Key-encryption key (hex); created if "
                                                "missing.")] = Path("kbs-kek.hex"),
    admin_token_file: Annotated[Path, typer.Option(help="Admin API token; created if "
                                                        "missing.")] = Path("kbs-admin.token"),
    trust: Annotated[str, typer.Option(
        help="Trusted roots: amd (AMD's real roots), or emulated (this installation's emulated "
             "AMD, which signs its emulated CVMs' reports: opt in by name).")] = "amd",
) -> None:
    """Serve the broker until interrupted."""
    environment = prepare(db, host, port, workers, kek_file, admin_token_file, trust)
    with listen(host, port) as listener:
        os.environ.update(environment)
        typer.echo(serving_line(listener, db, admin_token_file))
        start(listener, workers)


def serving_line(listener: socket.socket, db: str, admin_token_file: Path) -> str:
    """What ``serve`` prints once its socket listens: the URL with the port the OS chose for
    ``--port 0``, the database without its password, where the admin token is."""
    from sqlalchemy.engine import make_url

    return (f"serving the key broker at {url_of(listener)} (database "
            f"{make_url(db).render_as_string(hide_password=True)}, admin token in "
            f"{admin_token_file}); Ctrl-C stops it")


def url_of(listener: socket.socket) -> str:
    """``http://HOST:PORT`` of a listening socket (an IPv6 address in brackets)."""
    host, port = listener.getsockname()[:2]
    return f"http://[{host}]:{port}" if listener.family == socket.AF_INET6 else (
        f"http://{host}:{port}")


TRUSTS = ("amd", "emulated")


def check_trust(trust: str) -> str:
    """``--trust``: AMD's real roots, or this installation's emulated AMD by name."""
    if trust not in TRUSTS:
        raise UsageError(f"--trust must be amd or emulated, not {trust!r}")
    return trust


def prepare(db: str, host: str, port: int, workers: int, kek_file: Path,
            admin_token_file: Path, trust: str) -> dict[str, str]:
    """Every check ``serve`` makes before it listens, in this order (the options before any
    file is made): the worker count, the roots, the port; then the key-encryption key and the
    admin token (created if missing), the database's tables. Returns the environment each
    worker builds its broker from."""
    check_workers(workers)
    check_trust(trust)
    check_port(port)
    load_kek(kek_file)
    load_admin_token(admin_token_file)
    from cvm.attestation.kbs.storage import Storage

    Storage(db)  # create the tables once, before the workers start
    return worker_environment(db, kek_file, admin_token_file, trust)


def worker_environment(db: str, kek_file: Path, admin_token_file: Path, trust: str
                       ) -> dict[str, str]:
    """What :func:`app_from_environment` reads in each worker: the files by absolute path (a
    worker may start elsewhere)."""
    return {ENV_DB: db, ENV_KEK: str(kek_file.resolve()),
            ENV_ADMIN: str(admin_token_file.resolve()), ENV_TRUST: trust}


def start(listener: socket.socket, workers: int) -> None:
    """Run uvicorn's workers on the environment's broker, serving the socket ``serve`` bound
    (so the address printed is the one served, whatever port the OS chose); uvicorn's own exit
    when it could not start is an OS error naming the address (exit 74), its clean exit a
    return."""
    import uvicorn

    try:
        uvicorn.run("cvm.cli.kbs:app_from_environment", factory=True, fd=listener.fileno(),
                    workers=workers, log_level="warning", access_log=False, proxy_headers=False)
    except SystemExit as stop:
        if stop.code not in (None, 0):
            raise OSError(errno.EADDRNOTAVAIL, "the broker could not start listening",
                          url_of(listener)) from None


def check_port(port: int) -> None:
    """A TCP port number (0: any free port)."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port} is not a TCP port (0..65535)")


LISTEN_BACKLOG = 2048  # uvicorn's own


def listen(host: str, port: int) -> socket.socket:
    """The broker's socket, bound and listening (port 0: one the OS chooses); an address it
    cannot listen on (in use, not this machine's, not an address) refused in one line."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as error:
        raise UsageError(f"--host {host!r}: not an address ({error})") from None
    listener = socket.socket(family, kind, protocol)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        listener.bind(address)
        listener.listen(LISTEN_BACKLOG)
    except OSError as error:
        listener.close()
        raise OSError(error.errno, f"cannot listen: {error.strerror}",
                      f"{host}:{port}") from None
    return listener


def _admin(url: str, token_file: Path) -> object:
    import httpx

    token = token_text(token_file, "--admin-token-file")
    return httpx.Client(base_url=url.rstrip("/"), timeout=30.0,
                        headers={"authorization": f"Bearer {token}"})


@app.command()
def admin(
    url: Annotated[str, typer.Argument(help="The broker, e.g. http://127.0.0.1:8080")],
    admin_token_file: Annotated[Path, typer.Option(help="Admin API token.")] = Path(
        "kbs-admin.token"),
    secret: Annotated[list[str] | None, typer.Option(
        help="REPOSITORY/TYPE/TAG=FILE: register a secret.")] = None,
    reference: Annotated[Path | None, typer.Option(help="Register reference values.")] = None,
    policy: Annotated[Path | None, typer.Option(help="Register the Rego policy.")] = None,
    audit: Annotated[bool, typer.Option(help="Print the audit log.")] = False,
) -> None:
    """Register secrets, reference values, a policy; read the audit log."""
    import httpx

    client = _admin(url, admin_token_file)
    assert isinstance(client, httpx.Client)
    with client:
        try:
            rows = administer(client, secret or [], reference, policy, audit)
        except httpx.HTTPError as error:  # what the broker answers is checked in administer
            raise ExternalToolError(f"cannot reach the key broker at {url} ({error})") from None
    if rows is not None:
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")


def parse_secret(item: str) -> tuple[str, Path]:
    """``--secret REPOSITORY/TYPE/TAG=FILE``: the resource path and the file."""
    path, _, file = item.partition("=")
    if not file:
        raise UsageError(f"--secret {item!r} is not REPOSITORY/TYPE/TAG=FILE")
    return path, Path(file)


def check_answer(status: int, text: str, what: str) -> None:
    """An answer of 400 or more is refused in one line: what was asked, the status and the
    start of the broker's answer."""
    if status >= 400:
        raise UsageError(f"{what}: the broker answered {status} {text[:200]}")


def policy_body(rego: bytes) -> dict[str, str]:
    """The admin API's body for a Rego policy: the broker's one policy, ``default``."""
    import base64

    return {"type": "rego", "policy_id": "default", "policy": base64.b64encode(rego).decode()}


def administer(client: object, secret: list[str], reference: Path | None,
               policy: Path | None, audit: bool) -> object:
    """The admin requests, in order: each secret, the reference values, the policy; then the
    audit log's last 1000 rows, returned (None without ``--audit``). Every ``--secret`` is
    checked before the first request."""
    import httpx

    assert isinstance(client, httpx.Client)
    items = [parse_secret(item) for item in secret]
    for path, file in items:
        answer = client.post(f"/kbs/v0/resource/{path}", content=file.read_bytes())
        check_answer(answer.status_code, answer.text, f"secret {path}")
    if reference is not None:
        answer = client.post("/kbs/v0/reference-values", content=reference.read_bytes(),
                             headers={"content-type": "application/json"})
        check_answer(answer.status_code, answer.text, "reference")
    if policy is not None:
        answer = client.post("/kbs/v0/attestation-policy", json=policy_body(policy.read_bytes()))
        check_answer(answer.status_code, answer.text, "policy")
    if not audit:
        return None
    answer = client.get("/kbs/v0/audit", params={"limit": 1000})
    check_answer(answer.status_code, answer.text, "audit")
    return answer.json()
