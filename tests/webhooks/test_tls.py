"""An https callback is reached at the checked address with the URL's host name as the TLS
server name, and the certificate is verified: a certificate nobody vouches for is a failed
attempt, never a delivery."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

from tests.webhooks.helpers import FakeDns, enqueue, running, wait_until
from tests.webhooks.receiver import receiver_on


def self_signed(directory: Path, name: str) -> ssl.SSLContext:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def test_https_uses_the_host_name_for_tls_and_verifies_the_certificate(
    webhook_settings, tmp_path: Path
) -> None:
    tls = self_signed(tmp_path, "hooks.test")
    server_names: list[str | None] = []
    tls.sni_callback = lambda _socket, name, _context: server_names.append(name)  # type: ignore[assignment]
    dns = FakeDns()
    dns.answers["hooks.test"] = ["127.0.0.1"]
    settings = webhook_settings(webhook_retry_base_s=30.0)
    with receiver_on(tls=tls) as receiver, running(settings, resolver=dns) as client:
        resource_id = enqueue(client, f"https://hooks.test:{receiver.port}/hook", {"n": 1})
        view = wait_until(client, resource_id, lambda view: view.attempts >= 1)

    assert server_names == ["hooks.test"]  # reached at 127.0.0.1, introduced as hooks.test
    assert view.status == "pending"
    assert view.last_status_code is None
    assert view.last_error is not None
    assert "certificate verify failed" in view.last_error.lower()
    assert receiver.received == []
