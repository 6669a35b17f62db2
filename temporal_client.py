"""The one way every process of the product connects to Temporal.

The worker, the API and ``starter.py`` all connect through :func:`connect`, so what the
settings say about a secured Temporal (DESIGN section 10: ``TEMPORAL_TLS__*``,
``TEMPORAL_API_KEY``) holds for each of them alike:

- no TLS setting and no API key: plaintext, as to the dev server of ``make run``;
- a CA, a client certificate and key (mTLS), ``TEMPORAL_TLS__ENABLED`` or an API key:
  TLS only, never a plaintext attempt; without a CA the system's roots check the server.

The files are read when connecting, so a certificate renewed on disk is taken at the next
start. A setting that cannot be used is a :class:`TemporalSettingsError`, one line that
names the setting and the file but never a key or its contents.
"""

from __future__ import annotations

import os
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypedDict

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.service import RPCError, TLSConfig

from config import Settings, TemporalTLSSettings

ENV = "TEMPORAL_TLS__"


class TemporalConnectError(Exception):
    """Temporal could not be connected to; the message is one line for an operator."""


class TemporalSettingsError(TemporalConnectError, ValueError):
    """A Temporal connection setting that cannot be used (a file missing, not PEM...)."""


class ConnectOptions(TypedDict):
    """Keyword arguments of ``Client.connect`` besides the address."""

    namespace: str
    tls: bool | TLSConfig
    api_key: str | None
    data_converter: DataConverter


def connect_options(settings: Settings) -> ConnectOptions:
    """The ``Client.connect`` arguments the settings ask for; the files read and checked."""
    tls = settings.temporal_tls
    api_key = settings.temporal_api_key.get_secret_value() or None
    return ConnectOptions(
        namespace=settings.temporal_namespace,
        tls=tls_config(tls, api_key is not None),
        api_key=api_key,
        data_converter=pydantic_data_converter,
    )


def tls_config(tls: TemporalTLSSettings, api_key: bool) -> bool | TLSConfig:
    """False for plaintext, True for TLS checked against the system's roots, else the config."""
    if (tls.client_cert is None) != (tls.client_key is None):
        raise TemporalSettingsError(
            f"{ENV}CLIENT_CERT and {ENV}CLIENT_KEY go together: set both or neither"
        )
    files = (tls.ca_cert, tls.client_cert, tls.client_key)
    if not any(files) and not tls.server_name:
        return tls.enabled or api_key
    ca = _read(tls.ca_cert, "CA_CERT", _check_ca) if tls.ca_cert else None
    cert = key = None
    if tls.client_cert and tls.client_key:
        cert = _read(tls.client_cert, "CLIENT_CERT", _check_certificate)
        key = _read(tls.client_key, "CLIENT_KEY", _check_key)
        _check_pair(tls.client_cert, tls.client_key)
    return TLSConfig(
        server_root_ca_cert=ca,
        client_cert=cert,
        client_private_key=key,
        domain=tls.server_name or None,
    )


async def connect(settings: Settings, *, lazy: bool = False) -> Client:
    """A client of ``TEMPORAL_ADDRESS`` as the settings say; lazy: connects on first use.

    Raises :class:`TemporalSettingsError` for an unusable setting and
    :class:`TemporalConnectError` for a server that cannot be reached or refuses us.
    """
    options = connect_options(settings)
    try:
        return await Client.connect(settings.temporal_address, lazy=lazy, **options)
    except (RuntimeError, RPCError) as error:  # the SDK's "Failed client connect: ..."
        raise TemporalConnectError(
            f"cannot connect to Temporal at {settings.temporal_address} ({_how(options)}): {error}"
        ) from None


def _how(options: ConnectOptions) -> str:
    """How we tried, for the error: an operator sees at once a setting not taken."""
    tls = options["tls"]
    how = (
        "mTLS" if isinstance(tls, TLSConfig) and tls.client_cert else "TLS" if tls else "plaintext"
    )
    return f"{how}, API key" if options["api_key"] else how


def _read(path: Path, name: str, check: Callable[[bytes], str | None]) -> bytes:
    try:
        data = path.expanduser().read_bytes()
    except OSError as error:
        raise TemporalSettingsError(
            f"{ENV}{name}: cannot read {path}: {error.strerror or error}"
        ) from None
    if problem := check(data):
        raise TemporalSettingsError(f"{ENV}{name}: {path} {problem}")
    return data


def _check_certificate(data: bytes) -> str | None:
    return None if b"-----BEGIN CERTIFICATE-----" in data else "holds no PEM certificate"


def _check_ca(data: bytes) -> str | None:
    if problem := _check_certificate(data):
        return problem
    try:
        ssl.create_default_context(cadata=data.decode("ascii"))
    except (ssl.SSLError, ValueError):
        return "is not a readable PEM certificate"
    return None


def _check_key(data: bytes) -> str | None:
    if b"ENCRYPTED" in data:
        return "is an encrypted key: give the key unencrypted, readable only by this service"
    if b"PRIVATE KEY-----" not in data:
        return "holds no PEM private key"
    return None


def _check_pair(cert: Path, key: Path) -> None:
    """The certificate and key load together, so a mismatch is found here, by name."""
    try:
        # A password callback, so that OpenSSL never prompts on a terminal for one.
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(
            cert.expanduser(), key.expanduser(), password=lambda: b""
        )
    except (ssl.SSLError, ValueError):
        raise TemporalSettingsError(
            f"{ENV}CLIENT_CERT and {ENV}CLIENT_KEY: {cert} and {key} are not a PEM "
            "certificate and its private key"
        ) from None


def exit_with(main: Callable[[], int]) -> NoReturn:
    """Run ``main`` and leave with its code without interpreter finalisation: the Temporal
    client's native runtime threads can crash it ("PyGILState_Release ... finalizing")
    after the work is done, and nothing is left to clean up."""
    try:
        code = main()
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            code = exit_.code or 0
        else:
            sys.stderr.write(f"{exit_.code}\n")
            code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
