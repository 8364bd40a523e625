"""The broker over HTTP, in process (httpx's ASGI transport, or the ASGI calls themselves):
problem bodies, the session cookie, bearer tokens, the body limit, the admin API."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from cvm.attestation.kbs.app import (
    ERROR_TYPE_PREFIX,
    MAX_BODY_BYTES,
    BodyLimit,
    GuestRoutes,
    error_response,
    policy_document,
)
from cvm.attestation.kbs.broker import ProblemError
from cvm.attestation.verifier.rego_policy import DEFAULT_POLICY
from cvm.errors import FormatError, UsageError

from .units import ADMIN_TOKEN, AUTH, SECRET, SECRET_PATH, SESSION_TTL, FastKbs, request

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def _problem(response: Any, status: int, kind: str) -> str:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"{ERROR_TYPE_PREFIX}/{kind}" and body["status"] == status
    assert set(body) == {"type", "detail", "status"}
    return str(body["detail"])


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None
           ) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "headers": headers or [],
            "server": ("kbs", 80), "client": ("127.0.0.1", 1)}


def _call(app: Any, scope: dict[str, Any], messages: list[dict[str, Any]]
          ) -> list[dict[str, Any]]:
    """Run ``app`` on ``scope`` with ``messages`` as the request; what it sent."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def _cookie(response: Any) -> str:
    return str(response.cookies["kbs-session-id"])


def test_a_round_trip_over_http(fast_kbs: FastKbs) -> None:
    kbs, app = fast_kbs, fast_kbs.app()
    challenge = request(app, "POST", "/kbs/v0/auth", content=AUTH)
    assert challenge.status_code == 200 and set(challenge.json()) == {"nonce", "extra-params"}
    cookie = challenge.headers["set-cookie"].lower()
    for attribute in ("httponly", "samesite=strict", f"max-age={int(SESSION_TTL)}"):
        assert attribute in cookie
    assert "Path=/kbs/v0" in challenge.headers["set-cookie"]  # paths are case-sensitive
    session_id = _cookie(challenge)
    body = kbs.attestation(challenge.json()["nonce"])
    attested = request(app, "POST", "/kbs/v0/attest", content=body,
                       headers={"cookie": f"theme=dark; kbs-session-id={session_id}"})
    assert attested.status_code == 200 and _cookie(attested) == session_id
    token = attested.json()["token"]
    assert kbs.broker.token_key.verify_token(token)
    by_cookie = request(app, "GET", f"/kbs/v0/resource/{SECRET_PATH}",
                        headers={"cookie": f"kbs-session-id={session_id}"})
    assert by_cookie.status_code == 200 and kbs.key.decrypt(by_cookie.json()) == SECRET
    by_token = request(app, "GET", f"/kbs/v0/resource/{SECRET_PATH}",
                       headers={"authorization": f"Bearer {token}"})
    assert by_token.status_code == 200 and kbs.key.decrypt(by_token.json()) == SECRET


def test_the_guests_refusals_are_problems(fast_kbs: FastKbs) -> None:
    app = fast_kbs.app()
    detail = _problem(request(app, "POST", "/kbs/v0/attest", content=b"{}"), 401,
                      "UnAuthenticatedCookie")
    assert "cookie" in detail
    _problem(request(app, "POST", "/kbs/v0/attest", content=b"{}",
                     headers={"cookie": "other=kbs-session-id"}), 401, "UnAuthenticatedCookie")
    _problem(request(app, "POST", "/kbs/v0/attest", content=b"{}",
                     headers={"cookie": "kbs-session-id=x"}), 400, "InvalidRequest")
    _problem(request(app, "POST", "/kbs/v0/auth", content=b"{"), 400, "InvalidRequest")
    _problem(request(app, "POST", "/kbs/v0/auth", content=b'{"version": "1", "tee": "snp"}'),
             401, "ProtocolVersion")
    _problem(request(app, "GET", f"/kbs/v0/resource/{SECRET_PATH}"), 401, "TokenNotFound")
    _problem(request(app, "GET", "/kbs/v0/resource/default/disk/root-key%0A"), 404,
             "InvalidRequestPath")
    _problem(request(app, "GET", "/kbs/v0/resource/a/b"), 404, "NotFound")
    _problem(request(app, "GET", "/kbs/v0/auth"), 405, "MethodNotAllowed")
    _problem(request(app, "DELETE", f"/kbs/v0/resource/{SECRET_PATH}"), 405,
             "MethodNotAllowed")


def test_bearer_tokens(fast_kbs: FastKbs) -> None:
    app = fast_kbs.app()

    def ask(authorization: str) -> Any:
        return request(app, "GET", f"/kbs/v0/resource/{SECRET_PATH}",
                       headers={"authorization": authorization})

    for wrong in ("Basic dXNlcjpwdw==", "bearer x.y.z", "Bearerx.y.z"):
        assert _problem(ask(wrong), 401, "TokenVerifierError") == (
            "expected Authorization: Bearer TOKEN")
    longest = "Bearer " + "x" * (16384 - 7)
    assert _problem(ask(longest), 401, "TokenVerifierError") == (
        "the attestation token is not valid")
    assert _problem(ask(longest + "x"), 401, "TokenVerifierError") == (
        "expected Authorization: Bearer TOKEN")
    # header names are case-insensitive, as HTTP's are
    _, token = fast_kbs.attest()
    sent = _call(app, _scope("GET", f"/kbs/v0/resource/{SECRET_PATH}",
                             [(b"Authorization", f"Bearer {token}".encode())]),
                 [{"type": "http.request"}])  # a message's body may be left out
    assert sent[0]["status"] == 200


def test_the_admin_api_wants_the_admin_token(fast_kbs: FastKbs) -> None:
    app = fast_kbs.app()
    path = "/kbs/v0/resource/default/disk/new"
    for headers in ({}, {"authorization": ""}, {"authorization": "Bearer "},
                    {"authorization": "Bearer wrong-token"},
                    {"authorization": f"Bearer {ADMIN_TOKEN}x"},
                    {"authorization": f"Basic {ADMIN_TOKEN}"}):
        assert _problem(request(app, "POST", path, content=b"v", headers=headers), 401,
                        "AdminAuthAccess") == "admin access denied"
        _problem(request(app, "GET", "/kbs/v0/audit", headers=headers), 401, "AdminAuthAccess")
    assert fast_kbs.broker.storage.secret("default/disk/new") is None
    assert request(app, "POST", path, content=b"new value", headers=ADMIN).status_code == 200
    session_id, _ = fast_kbs.attest()
    assert fast_kbs.key.decrypt(fast_kbs.broker.resource("default/disk/new", session_id,
                                                         None)) == b"new value"
    _problem(request(app, "POST", "/kbs/v0/resource/a/b/c%0A", content=b"v", headers=ADMIN),
             404, "InvalidRequestPath")
    assert fast_kbs.broker.storage.secret("a/b/c\n") is None
    # the admin token is no TEE's
    _problem(request(app, "GET", f"/kbs/v0/resource/{SECRET_PATH}", headers=ADMIN), 401,
             "TokenVerifierError")


def test_policies_and_reference_values_through_the_admin_api(fast_kbs: FastKbs) -> None:
    app = fast_kbs.app()

    def policy(**changes: Any) -> Any:
        body = {"type": "rego", "policy_id": "default",
                "policy": base64.b64encode(DEFAULT_POLICY.encode()).decode(), **changes}
        return request(app, "POST", "/kbs/v0/attestation-policy", json=body, headers=ADMIN)

    assert policy().status_code == 200 and policy(type="opa").status_code == 200
    assert "policy.type" in _problem(policy(type="wasm"), 400, "InvalidRequest")
    assert "not base64" in _problem(policy(policy="%%%"), 400, "InvalidRequest")
    assert "not base64" in _problem(policy(policy=base64.b64encode(b"\xff").decode()), 400,
                                    "InvalidRequest")
    broken = base64.b64encode(b"package x\nallow if {").decode()
    assert "does not compile" in _problem(policy(policy=broken), 400, "InvalidRequest")
    _problem(policy(extra=1), 400, "InvalidRequest")
    _problem(request(app, "POST", "/kbs/v0/attestation-policy", json={"type": "rego"}), 401,
             "AdminAuthAccess")
    assert [row["subject"] for row in fast_kbs.audit() if row["outcome"] == "policy"] == [
        "default v1", "default v2"]
    reference = json.dumps(fast_kbs.guests.reference).encode()
    answer = request(app, "POST", "/kbs/v0/reference-values", content=reference, headers=ADMIN)
    assert answer.status_code == 200 and answer.json() == {"version": 2}
    _problem(request(app, "POST", "/kbs/v0/reference-values", content=b"{}", headers=ADMIN), 400,
             "InvalidRequest")
    _problem(request(app, "POST", "/kbs/v0/reference-values", content=reference), 401,
             "AdminAuthAccess")


def test_the_policy_document() -> None:
    source = "package cvm.policy\n"
    encoded = base64.b64encode(source.encode()).decode()
    assert policy_document(json.dumps({"type": "rego", "policy_id": "p", "policy": encoded})
                           .encode()) == ("p", source)
    with pytest.raises(UsageError, match=r"policy\.type"):
        policy_document(b'{"type": "wasm", "policy_id": "p", "policy": ""}')
    with pytest.raises(FormatError, match="base64"):
        policy_document(b'{"type": "rego", "policy_id": "p", "policy": "a b"}')
    # every refusal names the field
    for body, where in ((b"[", "policy: not JSON"), (b"{}", "policy: missing"),
                        (b'{"type": 1, "policy_id": "p", "policy": ""}', r"policy\.type"),
                        (b'{"type": "rego", "policy_id": 1, "policy": ""}',
                         r"policy\.policy_id"),
                        (b'{"type": "rego", "policy_id": "p", "policy": 1}', r"policy\.policy")):
        with pytest.raises(FormatError, match=f"^{where}"):
            policy_document(body)

    def document(policy_id: str = "p", policy: str = encoded) -> bytes:
        return json.dumps({"type": "rego", "policy_id": policy_id, "policy": policy}).encode()

    assert policy_document(document("i" * 128))[0] == "i" * 128
    with pytest.raises(FormatError, match="longer than 128"):
        policy_document(document("i" * 129))
    large = "# a comment\n" * 1000  # a policy of many kilobytes
    encoded_large = base64.b64encode(large.encode()).decode()
    assert policy_document(document(policy=encoded_large))[1] == large


def test_the_openapi_document_describes_the_json_bodies(fast_kbs: FastKbs) -> None:
    paths = request(fast_kbs.app(), "GET", "/openapi.json").json()["paths"]
    for path in ("/kbs/v0/auth", "/kbs/v0/attest", "/kbs/v0/attestation-policy"):
        body = paths[path]["post"]["requestBody"]
        assert body["required"] is True and set(body["content"]) == {"application/json"}
        assert body["content"]["application/json"]["schema"]["type"] == "object"
    assert "required" in paths["/kbs/v0/auth"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]


def test_the_audit_log_through_the_admin_api(fast_kbs: FastKbs) -> None:
    app = fast_kbs.app()
    rows = request(app, "GET", "/kbs/v0/audit", headers=ADMIN).json()
    assert [row["outcome"] for row in rows] == ["reference", "secret", "secret"]
    page = request(app, "GET", "/kbs/v0/audit", params={"after": rows[0]["id"], "limit": 1},
                   headers=ADMIN).json()
    assert page == [rows[1]]
    for params in ({"limit": 0}, {"limit": 1001}, {"after": -1}, {"after": "x"}):
        assert _problem(request(app, "GET", "/kbs/v0/audit", params=params, headers=ADMIN),
                        400, "InvalidRequest") == "the request does not fit the API"


def test_error_responses() -> None:
    def body(error: Exception) -> tuple[int, dict[str, Any]]:
        response = asyncio.run(error_response(None, error))  # type: ignore[arg-type]
        return response.status_code, json.loads(bytes(response.body))

    assert body(ProblemError(403, "PolicyDeny", "no")) == (403, {
        "type": f"{ERROR_TYPE_PREFIX}/PolicyDeny", "detail": "no", "status": 403})
    assert body(StarletteHTTPException(404, "gone"))[1]["type"].endswith("/NotFound")
    assert body(StarletteHTTPException(405))[1]["type"].endswith("/MethodNotAllowed")
    assert body(StarletteHTTPException(418, "teapot")) == (418, {
        "type": f"{ERROR_TYPE_PREFIX}/InvalidRequest", "detail": "teapot", "status": 418})
    assert body(RequestValidationError([]))[1]["detail"] == "the request does not fit the API"
    status, long = body(FormatError("x" * 400))
    assert status == 400 and long["detail"] == "x" * 300
    assert body(UsageError("bad"))[1]["type"].endswith("/InvalidRequest")


def test_bodies_over_the_limit_are_refused(fast_kbs: FastKbs) -> None:
    app = fast_kbs.app()
    path = "/kbs/v0/resource/default/disk/big"
    exact = request(app, "POST", path, content=b"x" * MAX_BODY_BYTES, headers=ADMIN)
    assert exact.status_code == 200
    over = request(app, "POST", path, content=b"x" * (MAX_BODY_BYTES + 1), headers=ADMIN)
    assert _problem(over, 413, "PayloadTooLarge") == f"the body exceeds {MAX_BODY_BYTES} bytes"

    def chunks(size: int) -> Any:  # no Content-Length: the limit counts what arrives
        async def stream() -> Any:
            for _ in range(size // 4096):
                yield b"x" * 4096
            yield b"x" * (size % 4096)
        return stream()

    for target in ("/kbs/v0/auth", path):
        refused = request(app, "POST", target, content=chunks(MAX_BODY_BYTES + 1),
                          headers=ADMIN)
        assert _problem(refused, 413, "PayloadTooLarge") == (
            f"the body exceeds {MAX_BODY_BYTES} bytes")
    assert request(app, "POST", path, content=chunks(MAX_BODY_BYTES), headers=ADMIN
                   ).status_code == 200
    for declared in (b"12x", b"-1", str(MAX_BODY_BYTES + 1).encode()):
        sent = _call(app, _scope("POST", "/kbs/v0/auth", [(b"content-length", declared)]),
                     [{"type": "http.request", "body": AUTH}])
        assert sent[0]["status"] == 413


def test_the_guest_routes_read_the_whole_body_and_stop_on_a_disconnect(
        fast_kbs: FastKbs) -> None:
    app = fast_kbs.app()
    half = len(AUTH) // 2
    sent = _call(app, _scope("POST", "/kbs/v0/auth"), [
        {"type": "http.request", "body": AUTH[:half], "more_body": True},
        {"type": "http.request", "body": AUTH[half:], "more_body": True},
        {"type": "http.request"}])
    assert sent[0]["status"] == 200
    long = json.dumps({"version": "0.4.0", "tee": "snp", "x" * 400: 1}).encode()
    sent = _call(app, _scope("POST", "/kbs/v0/auth"), [{"type": "http.request", "body": long}])
    assert sent[0]["status"] == 400
    assert len(json.loads(sent[1]["body"])["detail"]) == 300  # the echo of the input, bounded
    calls: list[str] = []

    def handler(scope: Any, body: bytes) -> Any:
        calls.append("handled")
        raise AssertionError("a disconnected request is not handled")

    routes = GuestRoutes(app, lambda method, path: handler)
    sent = _call(routes, _scope("POST", "/kbs/v0/auth"), [
        {"type": "http.request", "body": b"{", "more_body": True},
        {"type": "http.disconnect"}])
    assert sent == [] and calls == []


def test_other_scopes_pass_through_unbounded() -> None:
    seen: list[Any] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope["type"], await receive()))
        await send({"type": "websocket.close"})

    def handler(scope: Any, body: bytes) -> Any:
        raise AssertionError("only HTTP requests are the guest's")

    big = {"type": "websocket.receive", "body": b"x" * 64}
    for layer in (BodyLimit(inner, limit=8), GuestRoutes(inner, lambda m, p: handler)):
        assert _call(layer, {"type": "websocket", "path": "/kbs/v0/auth", "method": "POST"},
                     [dict(big)]) == [{"type": "websocket.close"}]
    assert seen == [("websocket", big), ("websocket", big)]
