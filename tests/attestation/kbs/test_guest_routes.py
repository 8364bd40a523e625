"""The guest's routes served before FastAPI's routing answer exactly as the FastAPI routes do."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from cvm.attestation.kbs import app as kbs_app
from cvm.attestation.kbs.broker import Broker
from cvm.attestation.kbs.storage import Storage
from cvm.attestation.verifier.trust import TrustRoots

AUTH = {"version": "0.4.0", "tee": "snp"}
REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/kbs/v0/auth", {"json": AUTH}),
    ("POST", "/kbs/v0/auth", {"content": b"{not json"}),
    ("POST", "/kbs/v0/auth", {"json": {"version": "9", "tee": "snp"}}),
    ("POST", "/kbs/v0/auth", {"json": {**AUTH, "x": 1}}),
    ("POST", "/kbs/v0/auth", {"content": b"x" * (2 << 20)}),
    ("POST", "/kbs/v0/attest", {"json": {"runtime-data": {}}}),
    ("POST", "/kbs/v0/attest", {"content": b"[]", "cookies": {"kbs-session-id": "nope"}}),
    ("POST", "/kbs/v0/attest", {"content": b"{}", "cookies": {"kbs-session-id": "nope"}}),
    ("GET", "/kbs/v0/resource/a/b/c", {}),
    ("GET", "/kbs/v0/resource/a/b/c", {"cookies": {"kbs-session-id": "nope"}}),
    ("GET", "/kbs/v0/resource/a/b/c", {"headers": {"authorization": "Basic x"}}),
    ("GET", "/kbs/v0/resource/a/b/c", {"headers": {"authorization": "Bearer x.y.z"}}),
    ("GET", "/kbs/v0/resource/a/b/c%20d", {}),
    ("GET", "/kbs/v0/resource/a/b", {}),
    ("GET", "/kbs/v0/resource/a/b/c/d", {}),
    ("PUT", "/kbs/v0/auth", {"json": AUTH}),
    ("GET", "/kbs/v0/auth", {}),
]


def _answers(tmp_path: Path, name: str) -> list[tuple[int, str, Any, list[str]]]:
    broker = Broker(Storage(f"sqlite:///{tmp_path / name}"), bytes(32), TrustRoots.amd())
    transport = httpx.ASGITransport(app=kbs_app.create_app(broker, "admin-token-0123456789"))
    return asyncio.run(_ask(transport))


async def _ask(transport: httpx.ASGITransport) -> list[tuple[int, str, Any, list[str]]]:
    answers = []
    async with httpx.AsyncClient(transport=transport, base_url="http://kbs") as client:
        for method, path, options in REQUESTS:
            client.cookies.clear()
            cookies = options.get("cookies")
            if cookies:
                client.cookies.update(cookies)
            response = await client.request(method, path, **{
                k: v for k, v in options.items() if k != "cookies"})
            body = response.json()
            if isinstance(body, dict) and "nonce" in body:
                body = {**body, "nonce": "(fresh)"}
            cookie = [part.split("=")[0].strip().lower() for part in
                      response.headers.get("set-cookie", "").split(";")]
            answers.append((response.status_code, response.headers["content-type"], body,
                            cookie))
    return answers


def test_the_fast_routes_answer_as_fastapi(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    fast = _answers(tmp_path, "fast.db")
    served: list[str] = []
    original = kbs_app.GuestRoutes.__call__

    async def counting(self: kbs_app.GuestRoutes, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.route(scope["method"], scope["path"]) is not None:
            served.append(scope["path"])
        await original(self, scope, receive, send)

    monkeypatch.setattr(kbs_app.GuestRoutes, "__call__", counting)
    _answers(tmp_path, "count.db")
    assert len(served) == 12  # not the oversize body (BodyLimit answers), nor other paths

    async def passing(self: kbs_app.GuestRoutes, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    monkeypatch.setattr(kbs_app.GuestRoutes, "__call__", passing)
    assert fast == _answers(tmp_path, "fastapi.db")
    assert [status for status, *_ in fast] == [200, 400, 401, 400, 413, 401, 400, 400, 401, 401,
                                               401, 401, 404, 404, 404, 405, 405]
