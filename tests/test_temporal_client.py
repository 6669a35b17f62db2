"""What the Temporal settings turn into: the arguments every client connects with, or one
line that names the setting at fault (and never a secret)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.service import TLSConfig

from config import Settings, TemporalTLSSettings
from temporal_client import TemporalSettingsError, connect_options
from tests.tls import Authority

API_KEY = "tmprl-secret-api-key"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority(tmp_path_factory.mktemp("pki"), "cluster")


def settings(api_key: str = "", **tls: Any) -> Settings:
    return Settings(temporal_tls=TemporalTLSSettings(**tls), temporal_api_key=SecretStr(api_key))


def test_no_tls_setting_is_plaintext_without_api_key() -> None:
    options = connect_options(Settings())
    assert options["tls"] is False
    assert options["api_key"] is None
    assert options["namespace"] == "default"


def test_enabled_alone_is_tls_checked_against_the_system_roots() -> None:
    assert connect_options(settings(enabled=True))["tls"] is True


def test_an_api_key_alone_turns_tls_on() -> None:
    options = connect_options(settings(api_key=API_KEY))
    assert options["tls"] is True
    assert options["api_key"] == API_KEY


def test_mtls_reads_the_pem_files(ca: Authority) -> None:
    client = ca.client("worker")
    tls = connect_options(
        settings(ca_cert=ca.path, client_cert=client.cert, client_key=client.key)
    )["tls"]
    assert isinstance(tls, TLSConfig)
    assert tls.server_root_ca_cert == ca.pem
    assert tls.client_cert == client.cert.read_bytes()
    assert tls.client_private_key == client.key.read_bytes()
    assert tls.domain is None


def test_the_server_name_overrides_the_addressed_host(ca: Authority) -> None:
    tls = connect_options(settings(ca_cert=ca.path, server_name="temporal.internal"))["tls"]
    assert isinstance(tls, TLSConfig) and tls.domain == "temporal.internal"


def test_the_environment_names_the_settings(ca: Authority, monkeypatch: pytest.MonkeyPatch) -> None:
    client = ca.client("worker")
    monkeypatch.setenv("TEMPORAL_TLS__CA_CERT", str(ca.path))
    monkeypatch.setenv("TEMPORAL_TLS__CLIENT_CERT", str(client.cert))
    monkeypatch.setenv("TEMPORAL_TLS__CLIENT_KEY", str(client.key))
    monkeypatch.setenv("TEMPORAL_TLS__SERVER_NAME", "temporal.internal")
    monkeypatch.setenv("TEMPORAL_API_KEY", API_KEY)
    options = connect_options(Settings())
    assert isinstance(options["tls"], TLSConfig) and options["tls"].client_cert
    assert options["api_key"] == API_KEY
    assert API_KEY not in repr(Settings())


def test_an_empty_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """As a compose file passes a variable the operator did not set: ``NAME=``."""
    monkeypatch.setenv("TEMPORAL_TLS__CA_CERT", "")
    assert Settings().temporal_tls.ca_cert is None
    assert connect_options(Settings())["tls"] is False


def _refusal(s: Settings) -> str:
    with pytest.raises(TemporalSettingsError) as refused:
        connect_options(s)
    message = str(refused.value)
    assert "\n" not in message
    return message


def test_a_missing_file_names_its_setting_and_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "ca.pem"
    assert _refusal(settings(ca_cert=missing)) == (
        f"TEMPORAL_TLS__CA_CERT: cannot read {missing}: No such file or directory"
    )


def test_a_file_that_is_not_pem_is_refused(ca: Authority, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    assert _refusal(settings(ca_cert=junk)) == (
        f"TEMPORAL_TLS__CA_CERT: {junk} holds no PEM certificate"
    )
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    assert "is not a readable PEM certificate" in _refusal(settings(ca_cert=broken))
    client = ca.client("worker")
    message = _refusal(settings(client_cert=client.cert, client_key=junk))
    assert message == f"TEMPORAL_TLS__CLIENT_KEY: {junk} holds no PEM private key"


def test_a_certificate_needs_its_own_key(ca: Authority, tmp_path: Path) -> None:
    client, other = ca.client("worker"), ca.client("other")
    assert "go together" in _refusal(settings(client_cert=client.cert))
    assert "go together" in _refusal(settings(client_key=client.key))
    message = _refusal(settings(client_cert=client.cert, client_key=other.key))
    assert message == (
        f"TEMPORAL_TLS__CLIENT_CERT and TEMPORAL_TLS__CLIENT_KEY: {client.cert} and "
        f"{other.key} are not a PEM certificate and its private key"
    )
    assert "PRIVATE" not in message


def test_an_encrypted_key_is_refused_without_a_prompt(ca: Authority, tmp_path: Path) -> None:
    client = ca.client("worker")
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_text(
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
    )
    message = _refusal(settings(client_cert=client.cert, client_key=encrypted))
    assert message.startswith(f"TEMPORAL_TLS__CLIENT_KEY: {encrypted} is an encrypted key")
