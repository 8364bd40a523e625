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
from cvm.errors import UsageError

app = typer.Typer(help="The key broker service (Trustee's RCAR protocol).", no_args_is_help=True)
ENV_DB, ENV_KEK, ENV_ADMIN, ENV_TRUST = ("CVM_KBS_DB", "CVM_KBS_KEK_FILE",
                                         "CVM_KBS_ADMIN_TOKEN_FILE", "CVM_KBS_TRUST")


def _secret_file(path: Path, make: bytes) -> bytes:
    """Read a secret file, creating it with ``make`` (mode 0600) if it does not exist."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(make)
    return make


def load_kek(path: Path) -> bytes:
    text = _secret_file(path, secrets.token_hex(32).encode() + b"\n").decode().strip()
    try:
        kek = bytes.fromhex(text)
    except ValueError:
        raise UsageError(f"{path}: the key-encryption key must be 64 hex digits") from None
    if len(kek) != 32:
        raise UsageError(f"{path}: the key-encryption key must be 64 hex digits")
    return kek


def load_admin_token(path: Path) -> str:
    token = _secret_file(path, secrets.token_urlsafe(32).encode() + b"\n").decode().strip()
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
    import uvicorn

    check_workers(workers)
    if trust not in ("amd", "emulated"):
        raise UsageError(f"--trust must be amd or emulated, not {trust!r}")
    check_port(port)
    load_kek(kek_file)
    load_admin_token(admin_token_file)
    os.environ.update({ENV_DB: db, ENV_KEK: str(kek_file.resolve()),
                       ENV_ADMIN: str(admin_token_file.resolve()), ENV_TRUST: trust})
    from cvm.attestation.kbs.storage import Storage

    Storage(db)  # create the tables once, before the workers start
    check_listen(host, port)
    try:
        uvicorn.run("cvm.cli.kbs:app_from_environment", factory=True, host=host, port=port,
                    workers=workers, log_level="warning", access_log=False, proxy_headers=False)
    except SystemExit as stop:  # uvicorn's own exit when it could not start
        if stop.code not in (None, 0):
            raise OSError(errno.EADDRNOTAVAIL, "the broker could not start listening",
                          f"{host}:{port}") from None


def check_port(port: int) -> None:
    """A TCP port number (0: any free port)."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port} is not a TCP port (0..65535)")


def check_listen(host: str, port: int) -> None:
    """Refuse, in one line, an address the broker cannot listen on (in use, not this
    machine's, not an address), before uvicorn tries and logs its own error."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as error:
        raise UsageError(f"--host {host!r}: not an address ({error})") from None
    with socket.socket(family, kind, protocol) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as error:
            raise OSError(error.errno, f"cannot listen: {error.strerror}",
                          f"{host}:{port}") from None


def _admin(url: str, token_file: Path) -> object:
    import httpx

    token = token_file.read_text().strip()
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
    import base64

    import httpx

    client = _admin(url, admin_token_file)
    assert isinstance(client, httpx.Client)
    with client:
        def check(response: httpx.Response, what: str) -> None:
            if response.status_code >= 400:
                raise UsageError(f"{what}: the broker answered {response.status_code} "
                                 f"{response.text[:200]}")

        for item in secret or []:
            path, _, file = item.partition("=")
            if not file:
                raise UsageError(f"--secret {item!r} is not REPOSITORY/TYPE/TAG=FILE")
            check(client.post(f"/kbs/v0/resource/{path}", content=Path(file).read_bytes()),
                  f"secret {path}")
        if reference is not None:
            check(client.post("/kbs/v0/reference-values", content=reference.read_bytes(),
                              headers={"content-type": "application/json"}), "reference")
        if policy is not None:
            body = {"type": "rego", "policy_id": "default",
                    "policy": base64.b64encode(policy.read_bytes()).decode()}
            check(client.post("/kbs/v0/attestation-policy", json=body), "policy")
        if audit:
            response = client.get("/kbs/v0/audit", params={"limit": 1000})
            check(response, "audit")
            sys.stdout.write(json.dumps(response.json(), indent=1) + "\n")
