"""Callback URLs that would make the service reach what only it can reach are refused at submit
time, for every forbidden class of address and every spelling of one, unless
WEBHOOK_ALLOWED_HOSTS permits it; and again at delivery time, on a DNS answer that changed."""

from __future__ import annotations

import pytest

from app.core.config import Settings
from app.webhooks.urls import CallbackRefusedError, check_callback_url
from tests.webhooks.helpers import FakeDns, enqueue, running, views, wait_until
from tests.webhooks.receiver import receiver_on

SECRET = "whsec_" + "C" * 43 + "="


def settings_with(**overrides: object) -> Settings:
    values: dict[str, object] = {"environment": "test", "webhook_secret": SECRET}
    return Settings(_env_file=None, **(values | overrides))  # type: ignore[call-arg]


FORBIDDEN = {
    "loopback": [
        "http://127.0.0.1/",
        "http://127.1.2.3:8080/x",
        "http://[::1]/",
        "http://localhost/",
    ],
    "private": [
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "https://[fc00::1]/",
        "https://[fd12:3456::1]/",
    ],
    "link-local": ["http://169.254.10.10/", "http://[fe80::1]/"],
    "carrier-grade NAT": ["http://100.64.0.1/", "http://100.127.255.254/"],
    "multicast": ["http://224.0.0.1/", "http://239.255.255.250/", "http://[ff02::1]/"],
    "unspecified": ["http://0.0.0.0/", "http://[::]/"],
    "IPv4-mapped": ["http://[::ffff:127.0.0.1]/", "http://[::ffff:10.0.0.1]/"],
    "embedded in IPv6": ["http://[2002:7f00:1::]/", "http://[64:ff9b::a00:1]/"],
    "cloud metadata": [
        "http://169.254.169.254/latest/meta-data/",
        "http://168.63.129.16/",
        "http://100.100.100.200/",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal/computeMetadata/v1/",
    ],
    "other spellings of loopback": [
        "http://2130706433/",
        "http://0x7f000001/",
        "http://127.1/",
        "http://0177.0.0.1/",
        "http://LOCALHOST./",
    ],
    "reserved": ["http://240.0.0.1/", "http://255.255.255.255/", "http://198.18.0.1/"],
}
CASES = [(kind, url) for kind, urls in FORBIDDEN.items() for url in urls]


@pytest.mark.parametrize(("kind", "url"), CASES, ids=[f"{kind}:{url}" for kind, url in CASES])
def test_a_forbidden_address_is_refused_at_submit_time(kind: str, url: str) -> None:
    with pytest.raises(CallbackRefusedError) as refused:
        check_callback_url(url, settings_with())
    assert refused.value.status_code == 422
    assert refused.value.details == {"field": "callback_url"}


@pytest.mark.parametrize(
    "url",
    [
        "ftp://8.8.8.8/",
        "file:///etc/passwd",
        "gopher://8.8.8.8/",
        "javascript:alert(1)",
        "//8.8.8.8/",
        "8.8.8.8",
        "http:///path",
        "http://user:pw@8.8.8.8/",
        "http://8.8.8.8:99999/",
        "http://8.8.8.8/ space",
        "http://8.8.8.8/\x00",
        "http://bücher.example/",
        "http://8.8.8.8/" + "a" * 2048,
    ],
)
def test_a_url_that_is_not_plain_http_is_refused(url: str) -> None:
    with pytest.raises(CallbackRefusedError) as refused:
        check_callback_url(url, settings_with())
    assert refused.value.details == {"field": "callback_url"}


def test_public_addresses_pass() -> None:
    for url in (
        "https://8.8.8.8/hook",
        "http://[2606:4700::1111]:8443/",
        "http://[::ffff:8.8.8.8]/",
    ):
        assert check_callback_url(url, settings_with()) == url


def test_the_allowlist_permits_a_cidr_range_and_a_host_name() -> None:
    settings = settings_with(webhook_allowed_hosts=["10.1.0.0/16", "receiver.internal"])
    dns = FakeDns()
    dns.answers["receiver.internal"] = ["192.168.7.7"]
    assert check_callback_url("http://10.1.2.3/x", settings)
    assert check_callback_url("http://receiver.internal:9000/x", settings, resolver=dns)
    with pytest.raises(CallbackRefusedError):
        check_callback_url("http://10.2.0.1/x", settings)  # outside the range
    with pytest.raises(CallbackRefusedError):
        check_callback_url("http://127.0.0.1/x", settings)


def test_a_name_resolving_to_any_forbidden_address_is_refused() -> None:
    dns = FakeDns()
    dns.answers["mixed.test"] = ["8.8.8.8", "10.0.0.5"]
    with pytest.raises(CallbackRefusedError, match="private"):
        check_callback_url("http://mixed.test/", settings_with(), resolver=dns)


def test_without_a_webhook_secret_callbacks_are_refused() -> None:
    with pytest.raises(CallbackRefusedError, match="WEBHOOK_SECRET"):
        check_callback_url("https://8.8.8.8/", settings_with(webhook_secret=""))


def test_a_malformed_webhook_secret_stops_the_start() -> None:
    for secret in ("not-whsec", "whsec_!!!", "whsec_" + "QUFB"):  # the last: 3 bytes
        with pytest.raises(ValueError, match="WEBHOOK_SECRET"):
            settings_with(webhook_secret=secret)


def test_a_dns_answer_that_turns_forbidden_is_refused_at_delivery(webhook_settings) -> None:
    """Rebinding: the name passed at submit time, then resolves to an internal address. The
    attempt is refused and nothing reaches the internal server (127.0.0.2 stands for it)."""
    dns = FakeDns()
    dns.answers["hooks.test"] = ["127.0.0.1"]
    settings = webhook_settings(webhook_retry_base_s=30.0)
    with receiver_on("127.0.0.1") as public, receiver_on("127.0.0.2") as internal:
        internal_url = f"http://hooks.test:{internal.port}/hook"
        public_url = f"http://hooks.test:{public.port}/hook"
        with running(settings, resolver=dns) as client:
            live_settings = client.app.state.settings  # type: ignore[attr-defined]
            assert check_callback_url(internal_url, live_settings, resolver=dns)
            dns.answers["hooks.test"] = ["127.0.0.2"]
            resource_id = enqueue(client, internal_url, {"n": 1})
            view = wait_until(client, resource_id, lambda view: view.attempts >= 1)
            # The same name, answered with the allowed address again: the attempt goes there,
            # to the checked address, under the URL's own host name.
            dns.answers["hooks.test"] = ["127.0.0.1"]
            other_id = enqueue(client, public_url, {"n": 2})
            (got,) = public.wait_for(1)
            wait_until(client, other_id, lambda view: view.status == "delivered")
            assert len(views(client, resource_id)) == 1

    assert view.status == "pending"
    assert view.last_status_code is None
    assert view.last_error is not None
    assert "loopback" in view.last_error
    assert "127.0.0.2" in view.last_error
    assert internal.received == []
    assert got.headers["host"] == f"hooks.test:{public.port}"
