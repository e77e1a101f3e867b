"""MQTT credentials for devices, factory gateways and park readers, issued from the registry.

Issuing again rotates (the old password stops working and its connections are dropped);
``DELETE`` revokes. Either is in force at the broker before the call returns.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response

from schemas.api import IssuedCredential
from services.access.credentials import issue, revoke
from services.access.errors import BrokerReloadError
from services.access.sync import BrokerSync
from services.api.auth import require_scope
from services.api.deps import DeviceId, FactoryId, ParkId
from services.api.problems import ProblemError, not_found
from services.core.access import CredentialKind
from services.core.api_keys import Scope
from services.storage.credentials import UnknownSubjectError

router = APIRouter(prefix="/v1", tags=["credentials"], dependencies=[require_scope(Scope.WRITE)])

_NOUNS = {
    CredentialKind.DEVICE: "device",
    CredentialKind.GATEWAY: "factory",
    CredentialKind.READER: "park",
}
_RESPONSES: dict[int | str, dict[str, str]] = {
    404: {"description": "Not registered"},
    503: {"description": "Stored, but the broker did not confirm the change"},
}


async def _issue(request: Request, kind: CredentialKind, subject: str) -> IssuedCredential:
    conninfo: str = request.app.state.conninfo
    broker: BrokerSync = request.app.state.broker_sync
    try:
        issued = await asyncio.to_thread(issue, conninfo, broker, kind, subject)
    except UnknownSubjectError as exc:
        raise not_found(_NOUNS[kind], subject) from exc
    except BrokerReloadError as exc:
        raise ProblemError(503, "Broker did not reload", str(exc)) from exc
    return IssuedCredential(
        username=issued.username,
        password=issued.password,
        client_id_prefix=issued.client_id_prefix,
        topics=issued.topics,
    )


async def _revoke(request: Request, kind: CredentialKind, subject: str) -> Response:
    conninfo: str = request.app.state.conninfo
    broker: BrokerSync = request.app.state.broker_sync
    try:
        revoked = await asyncio.to_thread(revoke, conninfo, broker, kind, subject)
    except BrokerReloadError as exc:
        raise ProblemError(503, "Broker did not reload", str(exc)) from exc
    if not revoked:
        raise ProblemError(
            404, "No credential", f"{_NOUNS[kind]} {subject!r} has no credential to revoke"
        )
    return Response(status_code=204)


@router.post(
    "/devices/{device_id}/credentials",
    status_code=201,
    summary="Issue or rotate a device's credential",
    responses=_RESPONSES,
)
async def issue_device_credential(request: Request, device_id: DeviceId) -> IssuedCredential:
    """Issue the device's own credential: its telemetry and status topics only."""
    return await _issue(request, CredentialKind.DEVICE, device_id)


@router.delete(
    "/devices/{device_id}/credentials",
    status_code=204,
    summary="Revoke a device's credential",
    responses=_RESPONSES,
)
async def revoke_device_credential(request: Request, device_id: DeviceId) -> Response:
    """Revoke the device's credential and drop its connections."""
    return await _revoke(request, CredentialKind.DEVICE, device_id)


@router.post(
    "/factories/{factory_id}/credentials",
    status_code=201,
    summary="Issue or rotate a factory gateway's credential",
    responses=_RESPONSES,
)
async def issue_gateway_credential(request: Request, factory_id: FactoryId) -> IssuedCredential:
    """Issue the gateway credential that publishes for every device of the factory."""
    return await _issue(request, CredentialKind.GATEWAY, factory_id)


@router.delete(
    "/factories/{factory_id}/credentials",
    status_code=204,
    summary="Revoke a factory gateway's credential",
    responses=_RESPONSES,
)
async def revoke_gateway_credential(request: Request, factory_id: FactoryId) -> Response:
    """Revoke the gateway credential and drop its connections."""
    return await _revoke(request, CredentialKind.GATEWAY, factory_id)


@router.post(
    "/parks/{park_id}/reader-credentials",
    status_code=201,
    summary="Issue or rotate a park's reader credential",
    responses=_RESPONSES,
)
async def issue_reader_credential(request: Request, park_id: ParkId) -> IssuedCredential:
    """Issue a subscribe-only credential for the park's shared signals topic."""
    return await _issue(request, CredentialKind.READER, park_id)


@router.delete(
    "/parks/{park_id}/reader-credentials",
    status_code=204,
    summary="Revoke a park's reader credential",
    responses=_RESPONSES,
)
async def revoke_reader_credential(request: Request, park_id: ParkId) -> Response:
    """Revoke the park's reader credential and drop its connections."""
    return await _revoke(request, CredentialKind.READER, park_id)
