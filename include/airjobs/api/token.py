"""``/token`` and ``/revoke`` (D17): OAuth2 password and refresh-token grants, RFC 7009 revocation. No
bearer token needed; failed password logins are throttled (``airjobs.api.throttle``)."""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from airjobs import db
from airjobs.api import body as bodies
from airjobs.api import docs
from airjobs.api import models as m
from airjobs.api.deps import AgaveRouter, BackendDep
from airjobs.api.envelope import error
from airjobs.api.throttle import LoginThrottle, client_address
from airjobs.errors import BadRequest, Unauthorized

router = APIRouter(tags=["auth"])  # /token has no trailing-slash alias (as before)
aliased = AgaveRouter(tags=["auth"])

OAUTH_BODY = docs.body(m.TokenRequest, form=m.TokenRequest)
TOKEN_DOC = docs.operation(
    "login",
    "Log in: an access token (and a refresh token) for a user name and password",
    ok={200: m.Token},
    errors=(401, 429),
    auth=False,
    envelope=False,
    request_body=OAUTH_BODY,
)
TOKEN_DOC["response_class"] = JSONResponse


def _logins(request: Request) -> LoginThrottle:
    logins: LoginThrottle = request.app.state.logins
    return logins


@router.post("/token", **TOKEN_DOC)
async def token(request: Request, backend: BackendDep) -> Response:
    fields = await bodies.read_body(request, bodies.TOKEN)
    grant = fields.get("grant_type", "password")
    result: dict[str, Any]
    if grant == "password":
        if not fields.get("username") or not fields.get("password"):
            raise BadRequest("username and password are required for grant_type=password.")
        who = fields["username"]
        logins = _logins(request)
        address = client_address(
            request.client.host if request.client else None, request.headers.get("x-forwarded-for")
        )
        wait = logins.retry_after(who, address)
        if wait is not None:
            return error(
                request,
                429,
                f"Too many failed logins for this user name or from this address; retry in {wait} seconds.",
                headers={"Retry-After": str(wait)},
            )
        try:
            result = await to_thread.run_sync(backend.login, who, fields["password"])
        except Unauthorized:
            # FAB answers "no such user" when it cannot reach its database: a refusal counts only when the
            # database answers and a second try refuses too (the first may have met the database restarting)
            if not await to_thread.run_sync(db.alive):
                return error(
                    request,
                    503,
                    "The service's database is unavailable for a moment; retry shortly.",
                    headers={"Retry-After": "5"},
                )
            try:
                result = await to_thread.run_sync(backend.login, who, fields["password"])
            except Unauthorized:
                logins.failure(who, address)
                raise
        logins.success(who, address)
    elif grant == "refresh_token":
        if not fields.get("refresh_token"):
            raise BadRequest("refresh_token is required for grant_type=refresh_token.")
        result = await to_thread.run_sync(backend.refresh, fields["refresh_token"])
    else:
        raise BadRequest(f"Unsupported grant_type {grant!r}: use password or refresh_token.")
    return JSONResponse({"token_type": "bearer", "scope": "default", **result})


REVOKE_DOC = docs.operation(
    "revoke",
    "Revoke a refresh or access token (RFC 7009: also 200 for one unknown or invalid already)",
    ok={
        200: {
            "description": "Revoked, or nothing to revoke (an empty body)",
            "headers": {"Cache-Control": {"description": "no-store", "required": True, "schema": {"type": "string"}}},
        }
    },
    auth=False,
    envelope=False,
    request_body=docs.body(m.RevokeRequest, form=m.RevokeRequest),
)
REVOKE_DOC["response_class"] = Response


@aliased.post("/revoke", **REVOKE_DOC)
async def revoke(request: Request, backend: BackendDep) -> Response:
    """RFC 7009 / WSO2 ``/revoke``: ``token`` is a refresh or an access token; 200 with an empty body, also
    for a token that is unknown or invalid already (nothing to revoke)."""
    fields = await bodies.read_body(request, bodies.TOKEN)
    if not fields.get("token"):
        raise BadRequest("token is required: POST /revoke with token=<refresh or access token>.")
    await to_thread.run_sync(backend.revoke, fields["token"])
    return Response(status_code=200, headers={"Cache-Control": "no-store"})


router.include_router(aliased)
