"""What routes receive by injection: settings, backends, the key store, the caller, a note id.

Each is an ``Annotated[..., Depends(...)]`` alias, so a route declares what it needs by type.
Dependencies resolve in the order a route lists them; routes list the caller first so that an
unauthenticated request is answered 401 before anything about its parameters.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Path, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from gateway.backends import Backends
from gateway.config import GatewaySettings
from gateway.errors import ApiError, invalid_note_id, unauthorized
from gateway.keys import ApiKeyStore, Principal, Role

API_KEY_HEADER = "X-API-KEY"

api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    scheme_name="ApiKey",
    description="Your API key (sk_live_...). Keep it secret.",
)


bearer = HTTPBearer(
    auto_error=False,
    scheme_name="Bearer",
    description="The same API key as a bearer token: `Authorization: Bearer sk_live_...`.",
)


def get_settings(request: Request) -> GatewaySettings:
    """The settings the app was created with."""
    return request.app.state.settings


def get_backends(request: Request) -> Backends:
    """The gRPC stubs opened by the lifespan."""
    return request.app.state.backends


def get_key_store(request: Request) -> ApiKeyStore:
    """The tenants-and-keys store opened by the lifespan."""
    return request.app.state.key_store


Settings = Annotated[GatewaySettings, Depends(get_settings)]
BackendStubs = Annotated[Backends, Depends(get_backends)]
KeyStore = Annotated[ApiKeyStore, Depends(get_key_store)]


async def authenticate(
    store: KeyStore,
    api_key: Annotated[str | None, Security(api_key_header)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Principal:
    """The caller behind the ``X-API-KEY`` header or ``Authorization: Bearer <key>`` (the same
    tenant keys on every surface); 401 when it is missing, unknown, revoked or expired.

    ``X-API-KEY`` wins when both are sent.
    """
    key = (api_key or "").strip() or (credentials.credentials.strip() if credentials else "")
    principal = await store.authenticate(key) if key else None
    if principal is None:
        raise unauthorized()
    return principal


def require_role(needed: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets through keys of role ``needed`` or above, and answers 403 otherwise."""

    async def dependency(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not principal.may(needed):
            raise ApiError(
                403,
                "INSUFFICIENT_ROLE",
                f"This API key's role ({principal.role.value}) may not do this",
                {"required_role": needed.value, "role": principal.role.value},
            )
        return principal

    return dependency


Caller = Annotated[Principal, Depends(authenticate)]
Editor = Annotated[Principal, Depends(require_role(Role.EDITOR))]
Admin = Annotated[Principal, Depends(require_role(Role.ADMIN))]


def parse_note_id(
    note_id: Annotated[str, Path(description="The note's id (UUID).", json_schema_extra={"format": "uuid"})],
) -> str:
    """The path's note id in canonical form; 400 INVALID_NOTE_ID when it is not a UUID."""
    try:
        return str(uuid.UUID(note_id))
    except ValueError:
        raise invalid_note_id() from None


NoteId = Annotated[str, Depends(parse_note_id)]
