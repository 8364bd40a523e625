"""``cvm kbs serve --workers 2``: two processes on one database serve one fleet — a session
opened on one worker is attested and served by whichever worker takes the next request."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cvm.attestation.kbs.client import KbsClient
from cvm.scenarios.attested_guest import Owner, reference_json

from .conftest import POSTGRES_URL, SECRET, SECRET_PATH, _fresh_postgres, free_port


@pytest.fixture(params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path, int]]:
    if request.param == "postgresql":
        if not POSTGRES_URL:
            pytest.skip("CVM_TEST_POSTGRES_URL is not set (CI sets it)")
        db = _fresh_postgres(POSTGRES_URL)
    else:
        db = f"sqlite:///{tmp_path / 'kbs.db'}"
    port = free_port()
    token_file = tmp_path / "admin.token"
    command = [sys.executable, "-c", "from cvm.cli.main import run; run()", "kbs", "serve",
               "--db", db, "--port", str(port), "--workers", "2", "--kek-file",
               str(tmp_path / "kek.hex"), "--admin-token-file", str(token_file),
               "--trust", "emulated"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                httpx.get(f"{url}/openapi.json", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                time.sleep(0.1)
        yield url, token_file, server.pid
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stderr:
            server.stderr.close()


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


@pytest.mark.slow
def test_two_workers_share_one_database(served: tuple[str, Path, int], owner: Owner) -> None:
    url, token_file, pid = served
    headers = {"authorization": f"Bearer {token_file.read_text().strip()}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as admin:
        assert admin.post("/kbs/v0/reference-values",
                          content=json.dumps(reference_json(owner))).status_code == 200
        assert admin.post(f"/kbs/v0/resource/{SECRET_PATH}", content=SECRET).status_code == 200
    cvms = [owner.launch(40 + index) for index in range(3)]
    for _ in range(4):
        for cvm in cvms:
            with KbsClient(url) as client:
                client.attest(cvm)
                assert client.resource(SECRET_PATH, cvm.tee_key) == SECRET
    assert len(_children(pid)) >= 2  # the supervisor and its two workers
    with httpx.Client(base_url=url, headers=headers, timeout=30) as admin:
        rows = admin.get("/kbs/v0/audit", params={"limit": 1000}).json()
    assert sum(row["outcome"] == "released" for row in rows) == 12
    assert sum(row["outcome"] == "affirmed" for row in rows) == 12
