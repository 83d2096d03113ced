"""Webhook destinations (issue 11, item 1): what is checked is what is connected to.

One class per kind of bypass: URLs that two parsers read differently (the check saw one host, the
HTTP client connected to another), credentials in URLs, DNS rebinding (a second resolution after the
check), the portal host's own addresses, and the receiver's answer shown to members. Each test runs a
real HTTP receiver on 127.0.0.1 with loopback refused and asserts that it is never reached.
"""

from __future__ import annotations

import socket

import pytest

from portal.models import WebhookDelivery, WebhookSubscription
from portal.services.delivery import webhooks
from tests.helpers import token_client
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.django_db

SECRET = "s3cret-for-tests-only-0123456789"


def stored_delivery(owner, url: str) -> WebhookDelivery:
    """A subscription written straight to the database (as an old row, or one saved while the rules were
    different) and one delivery of it: the delivery path must check on its own."""
    subscription = WebhookSubscription.objects.create(owner=owner, url=url, events=["label.changed"], secret=SECRET)
    return WebhookDelivery.objects.create(
        subscription=subscription, event="label.changed", payload={"event": "label.changed", "data": {}}
    )


def subscribe_via_api(user, url: str):
    return token_client(user).post("/api/webhooks/", {"url": url, "events": ["label.changed"]}, format="json")


@pytest.fixture
def no_loopback(settings):
    settings.SEM_WEBHOOK_ALLOW_LOOPBACK = False
    settings.SEM_WEBHOOK_TIMEOUT_S = 2
    settings.SEM_WEBHOOK_MAX_ATTEMPTS = 1


@pytest.fixture
def receiver():
    with Receiver([], default=200) as running:
        yield running


def receiver_port(receiver: Receiver) -> int:
    return receiver.server.server_address[1]


# Each URL is read as one host by a lenient parser (urllib's urlsplit, the old check) and as another by
# the HTTP client, or is ambiguous enough that some parser or resolver would read it so.
CONFUSED_URLS = [
    "http://127.0.0.1:{port}\\@10.0.0.1/../x",
    "http://127.0.0.1:{port}\\\\@10.0.0.1/",
    "http://10.0.0.1\\@127.0.0.1:{port}/",
    "http:\\\\127.0.0.1:{port}/",
    "http://127.0.0.1:{port}\\x@10.0.0.1/",
    "http://127.0.0.1:{port}%5C@10.0.0.1/",
    "http://127.0.0.1:{port}\t@10.0.0.1/",
    "http://10.0.0.1 &@127.0.0.1:{port}# @10.0.0.1/",
    "http://127.0.0.1:{port}#@10.0.0.1/",
    "http://127.1:{port}/",
    "http://0x7f.0.0.1:{port}/",
    "http://2130706433:{port}/",
    "http://0177.0.0.1:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://127.0.0.1:{port}\u3002/",
    "http://127.0.0.1:{port}/\u2025/",
]


class TestAuthorityConfusion:
    @pytest.mark.parametrize("template", CONFUSED_URLS)
    def test_a_confusing_url_is_refused_when_subscribed(self, no_loopback, receiver, member, template):
        url = template.format(port=receiver_port(receiver))
        response = subscribe_via_api(member, url)
        assert response.status_code == 400, response.json()
        assert "url" in response.json()["error"]["fields"]
        assert not WebhookSubscription.objects.exists()

    @pytest.mark.parametrize("template", CONFUSED_URLS)
    def test_a_stored_confusing_url_never_reaches_the_server(self, no_loopback, receiver, member, template):
        delivery = stored_delivery(member, template.format(port=receiver_port(receiver)))
        outcome = webhooks.attempt_delivery(delivery.pk)
        assert receiver.received == []
        delivery.refresh_from_db()
        assert outcome.status == WebhookDelivery.Status.FAILED and delivery.status == "failed"
        assert delivery.response_excerpt == ""

    def test_the_admin_form_applies_the_same_rules(self, no_loopback, member):
        from portal.admin import WebhookSubscriptionForm

        data = {"owner": member.pk, "events": '["label.changed"]', "secret": "s" * 20, "active": True}
        for url in ["http://127.0.0.1:8299\\@10.0.0.1/", "http://u:p@lims.example.org/", "http://127.0.0.1/"]:
            form = WebhookSubscriptionForm(data={**data, "url": url})
            assert not form.is_valid() and "url" in form.errors, url
        form = WebhookSubscriptionForm(data={**data, "url": "HTTPS://LIMS.example.org:443/a/../hook"})
        assert form.is_valid(), form.errors
        assert form.cleaned_data["url"] == "https://lims.example.org/hook"

    def test_the_normalised_url_is_what_is_stored(self, member, settings):
        settings.SEM_WEBHOOK_ALLOW_LOOPBACK = True
        response = subscribe_via_api(member, "HTTP://LocalHost:80/a/./b/../hook?x=1")
        assert response.status_code == 201, response.json()
        assert WebhookSubscription.objects.get().url == "http://localhost/a/hook?x=1"


class TestCredentialsInUrl:
    @pytest.mark.parametrize(
        "url",
        [
            "https://user:password@lims.example.org/hook",
            "https://token@lims.example.org/hook",
            "http://:@lims.example.org/hook",
        ],
    )
    def test_credentials_are_refused(self, member, url):
        response = subscribe_via_api(member, url)
        assert response.status_code == 400
        assert "url" in response.json()["error"]["fields"]

    def test_stored_credentials_are_not_sent(self, no_loopback, receiver, member, settings):
        settings.SEM_WEBHOOK_ALLOW_LOOPBACK = True
        delivery = stored_delivery(member, f"http://user:pw@127.0.0.1:{receiver_port(receiver)}/hook")
        webhooks.attempt_delivery(delivery.pk)
        assert receiver.received == []
        delivery.refresh_from_db()
        assert delivery.status == "failed" and "credentials" in delivery.error


class TestDnsRebinding:
    """The name is resolved once; the connection goes to the address that was checked."""

    NAME = "lims.rebind.test"
    CHECKED = "192.0.2.10"  # TEST-NET-1: allowed by the rules, and nothing answers there

    @pytest.fixture
    def rebinding_resolver(self, monkeypatch):
        real_getaddrinfo = socket.getaddrinfo
        asked: list[str] = []

        def getaddrinfo(host, port, *args, **kwargs):
            asked.append(host)
            if host == self.NAME:
                # The first answer passes the check; every later one points at this server.
                address = self.CHECKED if asked.count(self.NAME) == 1 else "127.0.0.1"
                return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port or 0))]
            return real_getaddrinfo(host, port, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        return asked

    def test_the_connection_goes_to_the_checked_address(
        self, no_loopback, receiver, member, rebinding_resolver, settings
    ):
        settings.SEM_WEBHOOK_TIMEOUT_S = 1
        delivery = stored_delivery(member, f"http://{self.NAME}:{receiver_port(receiver)}/hook")
        webhooks.attempt_delivery(delivery.pk)
        assert receiver.received == []  # the rebound answer (127.0.0.1) was never connected to
        assert rebinding_resolver.count(self.NAME) == 1
        delivery.refresh_from_db()
        assert delivery.status == "failed" and self.CHECKED in delivery.error

    def test_https_is_pinned_and_verifies_the_name(self, no_loopback, member, rebinding_resolver, monkeypatch):
        import urllib3

        opened = []

        class RecordingPool:
            def __init__(self, **options):
                opened.append(options)
                raise urllib3.exceptions.NewConnectionError(None, "recorded, not connected")

        monkeypatch.setattr(urllib3, "HTTPSConnectionPool", RecordingPool)
        delivery = stored_delivery(member, f"https://{self.NAME}/hook")
        webhooks.attempt_delivery(delivery.pk)
        assert [(o["host"], o["port"], o["server_hostname"], o["assert_hostname"], o["cert_reqs"]) for o in opened] == [
            (self.CHECKED, 443, self.NAME, self.NAME, "CERT_REQUIRED")
        ]
        assert rebinding_resolver.count(self.NAME) == 1


def self_signed_certificate(directory, name: str):
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


class TestPinnedTls:
    """https to a pinned address still sends the name as SNI and verifies the certificate against it."""

    NAME = "lims.pinned.test"

    @pytest.fixture
    def tls_receiver(self, tmp_path, monkeypatch, settings):
        import ssl

        settings.SEM_WEBHOOK_ALLOW_LOOPBACK = True
        settings.SEM_WEBHOOK_MAX_ATTEMPTS = 1
        settings.SEM_WEBHOOK_TIMEOUT_S = 5
        real_getaddrinfo = socket.getaddrinfo

        def getaddrinfo(host, port, *args, **kwargs):
            if host == self.NAME:
                return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port or 0))]
            return real_getaddrinfo(host, port, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        served = {}

        def start(certificate_name: str):
            cert, key = self_signed_certificate(tmp_path, certificate_name)
            # Trusted as a CA, so that only the name can make verification fail.
            monkeypatch.setattr("portal.services.delivery.outbound._ca_bundle", lambda: str(cert))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            served["sni"] = []
            context.sni_callback = lambda _sock, name, _ctx: served["sni"].append(name)
            receiver = Receiver([], default=200)
            receiver.server.socket = context.wrap_socket(receiver.server.socket, server_side=True)
            return receiver

        return start, served

    def test_delivered_with_sni_and_host_of_the_name(self, tls_receiver, member):
        start, served = tls_receiver
        with start(self.NAME) as receiver:
            port = receiver_port(receiver)
            delivery = stored_delivery(member, f"https://{self.NAME}:{port}/hook")
            webhooks.attempt_delivery(delivery.pk)
        delivery.refresh_from_db()
        assert (delivery.status, delivery.response_status) == ("delivered", 200), delivery.error
        assert served["sni"] == [self.NAME]
        assert receiver.received[0].headers["Host"] == f"{self.NAME}:{port}"

    def test_a_certificate_for_another_name_is_refused(self, tls_receiver, member):
        start, _served = tls_receiver
        with start("other.pinned.test") as receiver:
            delivery = stored_delivery(member, f"https://{self.NAME}:{receiver_port(receiver)}/hook")
            webhooks.attempt_delivery(delivery.pk)
        delivery.refresh_from_db()
        assert delivery.status == "failed" and receiver.received == []
        assert "hostname" in delivery.error.lower() or "match" in delivery.error.lower(), delivery.error


def own_non_loopback_address() -> str | None:
    candidates = set()
    try:
        candidates.update(info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET))
    except OSError:
        pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # no packet is sent; picks the outgoing interface
            candidates.add(probe.getsockname()[0])
    except OSError:
        pass
    own = sorted(address for address in candidates if not address.startswith("127.") and address != "0.0.0.0")
    return own[0] if own else None


class TestOwnAndLoopbackAddresses:
    def test_the_portal_hosts_own_address_is_refused_unless_allowed(self, member, settings):
        address = own_non_loopback_address()
        if address is None:
            pytest.skip("this host has no non-loopback IPv4 address")
        settings.SEM_WEBHOOK_ALLOW_LOOPBACK = False
        refused = subscribe_via_api(member, f"http://{address}:8000/hook")
        assert refused.status_code == 400 and "this server itself" in refused.json()["error"]["fields"]["url"][0]
        settings.SEM_WEBHOOK_ALLOW_LOOPBACK = True
        assert subscribe_via_api(member, f"http://{address}:8000/hook").status_code == 201

    def test_ipv6_loopback_is_delivered_when_loopback_is_allowed(self, member, settings):
        import threading
        from http.server import ThreadingHTTPServer

        class V6Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6

        settings.SEM_WEBHOOK_ALLOW_LOOPBACK = True
        receiver = Receiver([], default=200)  # not started: its handler records into receiver.received
        receiver.server.server_close()
        try:
            server = V6Server(("::1", 0), receiver.server.RequestHandlerClass)
        except OSError:
            pytest.skip("no IPv6 loopback here")
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            port = server.server_address[1]
            response = subscribe_via_api(member, f"http://[::1]:{port}/hook")
            assert response.status_code == 201, response.json()
            subscription = WebhookSubscription.objects.get()
            delivery = WebhookDelivery.objects.create(
                subscription=subscription, event="label.changed", payload={"event": "label.changed", "data": {}}
            )
            webhooks.attempt_delivery(delivery.pk)
        finally:
            server.shutdown()
            server.server_close()
        delivery.refresh_from_db()
        assert (delivery.status, delivery.response_status) == ("delivered", 200), delivery.error
        assert len(receiver.received) == 1 and receiver.received[0].headers["Host"] == f"[::1]:{port}"

    def test_loopback_is_refused_in_every_spelling(self, member, settings):
        settings.SEM_WEBHOOK_ALLOW_LOOPBACK = False
        for url in ["http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://127.0.0.2/", "http://localhost/"]:
            refusal = webhooks.refused_destination(url)
            assert refusal and "this server itself" in refusal, url


class TestResponseExcerptVisibility:
    """A member must not read what the portal's network answers; staff may (to debug a receiver)."""

    def test_members_do_not_see_the_receivers_answer(self, member, admin_user):
        for owner in (member, admin_user):
            delivery = stored_delivery(owner, "https://lims.example.org/hook")
            WebhookDelivery.objects.filter(pk=delivery.pk).update(
                status="failed", response_status=403, response_excerpt="internal answer", error="HTTP 403"
            )
        member_subscription = WebhookSubscription.objects.get(owner=member)
        admin_subscription = WebhookSubscription.objects.get(owner=admin_user)

        member_log = token_client(member).get(f"/api/webhooks/{member_subscription.pk}/deliveries/").json()
        assert [entry["response_excerpt"] for entry in member_log["results"]] == [None]
        assert "internal answer" not in str(member_log)
        admin_log = token_client(admin_user).get(f"/api/webhooks/{admin_subscription.pk}/deliveries/").json()
        assert [entry["response_excerpt"] for entry in admin_log["results"]] == ["internal answer"]


def test_the_parser_is_what_the_check_uses():
    """Guard against a second parser creeping back: refused_destination goes through parse_url."""
    from portal.services.delivery import outbound

    with pytest.raises(outbound.RefusedURL):
        outbound.parse_url("http://127.0.0.1\\@example.org/")
    assert webhooks.refused_destination("http://127.0.0.1\\@example.org/") is not None
