"""Route dependencies as named types: settings, database session, Temporal client, caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session
from temporalio.client import Client

from api.auth import ENROL, OPERATE, READ, ApiKeys, Caller, Role, identity_of
from api.errors import ApiError
from api.telemetry import Telemetry
from config import Settings
from models.db import get_engine

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="`Authorization: Bearer <key>`; keys and their roles come from API_KEYS",
)


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    with Session(get_engine(settings.database_url), expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_client(request: Request) -> Client:
    client: Client = request.app.state.client
    return client


ClientDep = Annotated[Client, Depends(get_client)]


def get_telemetry(request: Request) -> Telemetry:
    telemetry: Telemetry = request.app.state.telemetry
    return telemetry


TelemetryDep = Annotated[Telemetry, Depends(get_telemetry)]


_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    if credentials is None:
        raise ApiError(401, "unauthorized", "missing `Authorization: Bearer <key>`", _CHALLENGE)
    keys: ApiKeys = request.app.state.api_keys
    role = keys.role_of(credentials.credentials)
    if role is None:
        raise ApiError(401, "unauthorized", "API key not accepted", _CHALLENGE)
    return Caller(role, identity_of(credentials.credentials))


def _allowed(roles: frozenset[Role], what: str, caller: Caller) -> Caller:
    if caller.role not in roles:
        raise ApiError(403, "forbidden", f"a {caller.role.value} key may not {what}")
    return caller


def _reader(caller: Annotated[Caller, Depends(_caller)]) -> Caller:
    return _allowed(READ, "read", caller)


def _enroler(caller: Annotated[Caller, Depends(_caller)]) -> Caller:
    return _allowed(ENROL, "enrol", caller)


def _operator(caller: Annotated[Caller, Depends(_caller)]) -> Caller:
    return _allowed(OPERATE, "act on balances (operator only)", caller)


ReaderDep = Annotated[Caller, Depends(_reader)]
EnrolerDep = Annotated[Caller, Depends(_enroler)]
OperatorDep = Annotated[Caller, Depends(_operator)]
