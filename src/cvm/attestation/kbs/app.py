"""The broker over HTTP: FastAPI routes for Trustee's KBS API (``kbs/docs/kbs.yaml``), RFC 7807
problem bodies, bounded request sizes, an authenticated admin API.

================================================  ======================================
route                                             who
================================================  ======================================
``POST /kbs/v0/auth``                             a guest: Request -> Challenge + cookie
``POST /kbs/v0/attest``                           a guest: Attestation -> {"token": EAR JWT}
``GET /kbs/v0/resource/{repo}/{type}/{tag}``      a guest (cookie or bearer token) -> JWE
``POST /kbs/v0/resource/{repo}/{type}/{tag}``     admin: register a secret (raw body)
``POST /kbs/v0/attestation-policy``               admin: {"type": "rego", "policy_id", "policy"}
``POST /kbs/v0/reference-values``                 admin: a cvm-reference/1 document (cvm's own)
``GET /kbs/v0/audit``                             admin: the audit log (cvm's own)
================================================  ======================================

Errors are ``{"type": "https://github.com/confidential-containers/kbs/errors/<Kind>", "detail":
..., "status": ...}`` with Trustee's status codes: 401 for an unauthenticated or refused
attestation, 403 for a policy denial, 404 for an unknown resource; cvm answers 400 for a body
that is not the payload it expects and 413 for a body over the size limit.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import cookie_parser

from cvm.attestation.kbs import counters
from cvm.attestation.kbs.broker import Broker, ProblemError, resource_path
from cvm.errors import CvmError, FormatError, UsageError
from cvm.formats.kbs.json_fields import load_object, only_keys, text

ERROR_TYPE_PREFIX = "https://github.com/confidential-containers/kbs/errors"
RESOURCE_PREFIX = "/kbs/v0/resource/"
_SEGMENTS = re.compile(r"[^/]+/[^/]+/[^/]+")  # Starlette's {name} matches [^/]+
COOKIE = "kbs-session-id"
MAX_BODY_BYTES = 1 << 20
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_REQUEST_SCHEMA = {"type": "object", "required": ["version", "tee"], "properties": {
    "version": {"type": "string"}, "tee": {"type": "string"},
    "extra-params": {"type": ["object", "string"]}}}
_ATTESTATION_SCHEMA = {"type": "object", "required": ["runtime-data", "tee-evidence"],
                       "properties": {"runtime-data": {"type": "object"},
                                      "tee-evidence": {"type": "object"}}}
_POLICY_SCHEMA = {"type": "object", "required": ["type", "policy_id", "policy"], "properties": {
    "type": {"type": "string"}, "policy_id": {"type": "string"}, "policy": {"type": "string"}}}


_OPTIONAL_TEXT = {"anyOf": [{"type": "string"}, {"type": "null"}]}
_COOKIE_PARAMETER = {"name": COOKIE, "in": "cookie", "required": False,
                     "schema": {**_OPTIONAL_TEXT, "title": "Kbs-Session-Id"}}
_AUTHORIZATION_PARAMETER = {"name": "authorization", "in": "header", "required": False,
                            "schema": {**_OPTIONAL_TEXT, "title": "Authorization"}}
_PATH_PARAMETERS = [{"name": name, "in": "path", "required": True,
                     "schema": {"type": "string", "title": name.title()}}
                    for name in ("repository", "kind", "tag")]


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": schema}}}}


def problem(status: int, kind: str, detail: str) -> JSONResponse:
    return JSONResponse({"type": f"{ERROR_TYPE_PREFIX}/{kind}", "detail": detail,
                         "status": status}, status_code=status,
                        media_type="application/problem+json")


async def error_response(_: Request, error: Exception) -> JSONResponse:
    """The problem body for what a FastAPI route raised (registered for each kind in
    :func:`create_app`)."""
    if isinstance(error, ProblemError):
        return problem(error.status, error.kind, error.detail)
    if isinstance(error, StarletteHTTPException):
        kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(error.status_code, "InvalidRequest")
        return problem(error.status_code, kind, str(error.detail))
    if isinstance(error, RequestValidationError):
        return problem(400, "InvalidRequest", "the request does not fit the API")
    return problem(400, "InvalidRequest", str(error)[:300])  # a CvmError: the caller's input


def policy_document(body: bytes) -> tuple[str, str]:
    """An attestation-policy request (``{"type": "rego", "policy_id", "policy": base64}``):
    the policy id and the Rego source."""
    document = load_object(body, "policy")
    only_keys(document, "policy", {"type", "policy_id", "policy"})
    if text(document, "type", "policy", 16) not in ("rego", "opa"):
        raise UsageError("policy.type: expected \"rego\"")
    policy_id = text(document, "policy_id", "policy", 128)
    try:
        source = base64.b64decode(text(document, "policy", "policy", 1 << 20),
                                  validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise FormatError("policy.policy: not base64 of UTF-8 Rego") from None
    return policy_id, source


class BodyLimit:
    """Refuse a request body over ``limit`` bytes with 413, before it is all read."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]],
                 limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await problem(413, "PayloadTooLarge", f"the body exceeds {self.limit} bytes")(
                scope, receive, send)
            return
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise ProblemError(413, "PayloadTooLarge", f"the body exceeds {self.limit} bytes")
            return message

        await self.app(scope, bounded, send)


GuestHandler = Callable[[Scope, bytes], Response]


class GuestRoutes:
    """The guest's three routes (auth, attest, resource) answered before FastAPI's routing.

    A fleet's round trips are almost all these three requests, and each cost FastAPI's routing,
    dependency solving and exception middleware more than the broker's own work. This layer
    serves exactly ``POST /kbs/v0/auth``, ``POST /kbs/v0/attest`` and ``GET
    /kbs/v0/resource/<repository>/<type>/<tag>`` with the same handlers and problem bodies as the
    FastAPI routes (which stay declared, for the OpenAPI document); any other method or path,
    and a path that is not exactly one of these, goes to FastAPI unchanged. It sits inside
    :class:`BodyLimit`, so the same size bound applies, and outside FastAPI's middleware: an
    unexpected error in a handler reaches the server, which answers 500 as FastAPI would.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]],
                 route: Callable[[str, str], GuestHandler | None]) -> None:
        self.app, self.route = app, route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = (self.route(scope["method"], scope["path"]) if scope["type"] == "http"
                   else None)
        if handler is None:
            await self.app(scope, receive, send)
            return
        try:
            body = b""
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
            response = handler(scope, body)
        except ProblemError as error:
            response = problem(error.status, error.kind, error.detail)
        except CvmError as error:  # FormatError included: both are the caller's input
            response = problem(400, "InvalidRequest", str(error)[:300])
        await response(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _cookie(scope: Scope) -> str | None:
    header = _header(scope, b"cookie")
    return cookie_parser(header).get(COOKIE) if header is not None else None


def create_app(broker: Broker, admin_token: str) -> BodyLimit:
    """The ASGI application serving ``broker``; ``admin_token`` guards the admin API."""
    app = FastAPI(title="cvm key broker service", version="0.1.0",
                  description="Trustee's KBS protocol (RCAR) with cvm's composite evidence.")
    expected_admin = admin_token.encode()

    for raised in (ProblemError, CvmError, RequestValidationError, StarletteHTTPException):
        app.add_exception_handler(raised, error_response)

    def admin(authorization: str | None) -> None:
        given = (authorization or "").removeprefix("Bearer ").encode()
        if not authorization or not hmac.compare_digest(given, expected_admin):
            raise ProblemError(401, "AdminAuthAccess", "admin access denied")

    def bearer(authorization: str | None) -> str | None:
        if authorization is None:
            return None
        if not authorization.startswith("Bearer ") or len(authorization) > 16384:
            raise ProblemError(401, "TokenVerifierError", "expected Authorization: Bearer TOKEN")
        return authorization[len("Bearer "):]

    cookie_attributes = (f"; HttpOnly; Max-Age={int(broker.settings.session_ttl_seconds)}; "
                         "Path=/kbs/v0; SameSite=strict")

    def with_cookie(body: Any, session_id: str) -> JSONResponse:
        """``body`` with the session cookie (a session id the broker made: hex digits)."""
        return JSONResponse(body, headers={"set-cookie": COOKIE + "=" + session_id
                                           + cookie_attributes})

    def guest_auth(_: Scope, body: bytes) -> Response:
        session_id, challenge = broker.auth(body)
        return with_cookie(challenge, session_id)

    def guest_attest(scope: Scope, body: bytes) -> Response:
        session_id = _cookie(scope)
        return with_cookie({"token": broker.attest(session_id, body)}, session_id or "")

    def guest_resource(scope: Scope, _: bytes) -> Response:
        repository, kind, tag = scope["path"][len(RESOURCE_PREFIX):].split("/")
        path = resource_path(repository, kind, tag)
        return JSONResponse(broker.resource(path, _cookie(scope),
                                            bearer(_header(scope, b"authorization"))))

    def guest_route(method: str, path: str) -> GuestHandler | None:
        if method == "POST" and path == "/kbs/v0/auth":
            return guest_auth
        if method == "POST" and path == "/kbs/v0/attest":
            return guest_attest
        if (method == "GET" and path.startswith(RESOURCE_PREFIX)
                and _SEGMENTS.fullmatch(path[len(RESOURCE_PREFIX):])):
            return guest_resource
        return None

    # The guest's routes, declared for the OpenAPI document (cookie and header by hand) and for
    # a request GuestRoutes hands on; both run the same handlers, in the event loop: the
    # broker's work is CPU-bound and the GIL would serialise a thread pool anyway.
    @app.post("/kbs/v0/auth", openapi_extra=_json_body(_REQUEST_SCHEMA),
              responses={400: {}, 401: {}})
    async def auth(request: Request) -> Response:
        return guest_auth(request.scope, await request.body())

    @app.post("/kbs/v0/attest", openapi_extra={**_json_body(_ATTESTATION_SCHEMA),
                                               "parameters": [_COOKIE_PARAMETER]},
              responses={400: {}, 401: {}})
    async def attest(request: Request) -> Response:
        return guest_attest(request.scope, await request.body())

    @app.get("/kbs/v0/resource/{repository}/{kind}/{tag}",
             openapi_extra={"parameters": [*_PATH_PARAMETERS, _AUTHORIZATION_PARAMETER,
                                           _COOKIE_PARAMETER]},
             responses={401: {}, 403: {}, 404: {}})
    async def get_resource(request: Request) -> Response:
        return guest_resource(request.scope, b"")

    @app.post("/kbs/v0/resource/{repository}/{kind}/{tag}", responses={401: {}, 404: {}})
    async def post_resource(repository: str, kind: str, tag: str, request: Request,
                            authorization: Annotated[str | None, Header()] = None) -> Response:
        admin(authorization)
        path = resource_path(repository, kind, tag)
        await run_in_threadpool(broker.set_secret, path, await request.body())
        return Response(status_code=200)

    @app.post("/kbs/v0/attestation-policy", openapi_extra=_json_body(_POLICY_SCHEMA),
              responses={400: {}, 401: {}})
    async def attestation_policy(request: Request,
                                 authorization: Annotated[str | None, Header()] = None
                                 ) -> Response:
        admin(authorization)
        policy_id, source = policy_document(await request.body())
        await run_in_threadpool(broker.set_policy, source, policy_id)
        return Response(status_code=200)

    @app.post("/kbs/v0/reference-values", openapi_extra=_json_body({"type": "object"}),
              responses={400: {}, 401: {}})
    async def reference_values(request: Request,
                               authorization: Annotated[str | None, Header()] = None
                               ) -> JSONResponse:
        admin(authorization)
        version = await run_in_threadpool(broker.set_reference, await request.body())
        return JSONResponse({"version": version})

    @app.get("/kbs/v0/audit", responses={401: {}})
    async def audit_log(authorization: Annotated[str | None, Header()] = None,
                        after: Annotated[int, Query(ge=0, le=2**62)] = 0,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> JSONResponse:
        admin(authorization)
        rows = await run_in_threadpool(broker.storage.audit_log, limit, after)
        return JSONResponse(rows)

    counters.add_routes(app, broker, admin)  # the vTPM rollback counter (counters.py)
    # Outside FastAPI's own middleware: the guest's three requests reach their handlers through
    # two thin layers, the size bound first (it bounds the admin API as well).
    return BodyLimit(GuestRoutes(app, guest_route))
