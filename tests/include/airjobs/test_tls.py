"""``airjobs.tls``: which certificate the service serves, the self-signed one for localhost, the URLs it prints."""

from __future__ import annotations

import datetime as dt
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509

from airjobs import service, tls


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for key in ("AIRJOBS_TLS", "AIRJOBS_TLS_CERT", "AIRJOBS_TLS_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AIRJOBS_VAR", str(tmp_path))
    return monkeypatch


def test_plain_http_without_the_variables(clean_env):
    assert tls.settings() is None
    clean_env.setenv("AIRJOBS_PORT", "8080")
    assert service.base_url() == "http://localhost:8080"
    env = service.environment()
    assert not {"AIRFLOW__API__SSL_CERT", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL"} & set(env)


def test_self_signed_for_localhost_key_0600_and_reused(clean_env, tmp_path):
    clean_env.setenv("AIRJOBS_TLS", "self-signed")
    first = tls.settings()
    assert first and first.self_signed and first.host == "127.0.0.1"
    assert first.cert.parent == tmp_path / "tls"
    assert first.key.stat().st_mode & 0o777 == 0o600 and first.cert.stat().st_mode & 0o777 == 0o644
    c = x509.load_pem_x509_certificate(first.cert.read_bytes())
    san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    pem = first.cert.read_bytes()
    assert tls.settings().cert.read_bytes() == pem  # still valid: reused

    # due to expire within RENEW_BEFORE: made again
    clean_env.setattr(tls, "RENEW_BEFORE", dt.timedelta(days=400))
    again = tls.settings()
    assert again.cert.read_bytes() != pem and again.key.stat().st_mode & 0o777 == 0o600


def test_the_self_signed_certificate_verifies_strictly_for_localhost_and_127_0_0_1(clean_env):
    clean_env.setenv("AIRJOBS_TLS", "self-signed")
    t = tls.settings()
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(t.cert, t.key)
    import socket

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve(n: int) -> None:
            for _ in range(n):
                conn, _ = listener.accept()
                try:
                    with server.wrap_socket(conn, server_side=True) as s:
                        s.recv(1)
                except (ssl.SSLError, OSError):
                    pass

        threading.Thread(target=serve, args=(2,), daemon=True).start()
        ctx = ssl.create_default_context(cafile=str(t.cert))
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
        for host in ("localhost", "127.0.0.1"):
            with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw, server_hostname=host):
                pass


def test_given_files_and_bad_settings(clean_env, tmp_path):
    clean_env.setenv("AIRJOBS_TLS", "self-signed")
    made = tls.settings()
    clean_env.delenv("AIRJOBS_TLS")
    clean_env.setenv("AIRJOBS_TLS_CERT", str(made.cert))
    with pytest.raises(tls.TLSConfigError, match="go together"):
        tls.settings()
    clean_env.setenv("AIRJOBS_TLS_KEY", str(made.key))
    given = tls.settings()
    assert given and not given.self_signed and given.host == "127.0.0.1" and given.cert == made.cert
    clean_env.setenv("AIRJOBS_TLS_KEY", str(tmp_path / "missing.key"))
    with pytest.raises(tls.TLSConfigError, match="no such file"):
        tls.settings()
    clean_env.setenv("AIRJOBS_TLS_KEY", str(made.cert))  # not a key
    with pytest.raises(tls.TLSConfigError, match="not a PEM certificate and its key"):
        tls.settings()
    clean_env.setenv("AIRJOBS_TLS", "self-signed")
    with pytest.raises(tls.TLSConfigError, match="either"):
        tls.settings()
    for key in ("AIRJOBS_TLS_CERT", "AIRJOBS_TLS_KEY"):
        clean_env.delenv(key)
    clean_env.setenv("AIRJOBS_TLS", "on")
    with pytest.raises(tls.TLSConfigError, match="self-signed"):
        tls.settings()


def test_urls_follow_the_scheme_and_leave_out_the_default_port(clean_env):
    clean_env.setenv("AIRJOBS_TLS", "self-signed")
    clean_env.setenv("AIRJOBS_PORT", "443")
    assert service.base_url() == "https://localhost"
    env = service.environment()
    t = tls.settings()
    assert env["AIRFLOW__API__SSL_CERT"] == str(t.cert) and env["AIRFLOW__API__SSL_KEY"] == str(t.key)
    assert env["AIRFLOW__API__BASE_URL"] == "https://localhost"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "https://127.0.0.1/execution/"
    clean_env.setenv("AIRJOBS_PORT", "8443")
    assert service.base_url() == "https://localhost:8443"
    assert tls.base_url(None, "localhost", 80) == "http://localhost"


def test_a_port_it_cannot_have_fails_before_anything_starts(clean_env):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        clean_env.setenv("AIRJOBS_PORT", str(taken.getsockname()[1]))
        with pytest.raises(service.CannotStart, match="in use"):
            service.check_port()


def test_trust_hints_name_the_certificate(clean_env):
    clean_env.setenv("AIRJOBS_TLS", "self-signed")
    t = tls.settings()
    hints = "\n".join(tls.trust_hints(t))
    assert f"curl --cacert {t.cert}" in hints and f"REQUESTS_CA_BUNDLE={t.cert}" in hints
    assert Path(t.cert).exists()
