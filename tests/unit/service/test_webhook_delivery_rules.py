"""The pure parts of webhooks: signatures (checked by the Standard Webhooks reference
verifier), the outbound URL policy, and the retry schedule."""

from __future__ import annotations

import random
import socket
import time
from datetime import UTC, datetime, timedelta

import pytest

from schemas.settings import Settings
from service import webhook_signing as signing
from service import webhook_targets as targets
from service import webhooks

standardwebhooks = pytest.importorskip("standardwebhooks")


def test_signature_verifies_with_the_reference_implementation():
    secret = signing.new_secret()
    body = signing.body("evt_1", "upload.done", "2026-12-06T08:19:20Z",
                        {"upload_id": 7, "verdict": "ai", "ai_probability": 0.98})
    now = int(time.time())
    head = signing.headers([secret], "evt_1", now, body)
    assert standardwebhooks.Webhook(secret).verify(body, head)["data"]["upload_id"] == 7
    assert signing.verify(secret, head, body, now=now)
    # A changed body, another secret, or an old timestamp do not verify.
    assert not signing.verify(secret, head, body.replace(b'"ai"', b'"real"'), now=now)
    assert not signing.verify(signing.new_secret(), head, body, now=now)
    assert not signing.verify(secret, head, body, now=now + 10 * 60)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(signing.new_secret()).verify(body, head)


def test_two_secrets_sign_during_a_rotation_and_either_verifies():
    old, new = signing.new_secret(), signing.new_secret()
    body = b'{"id":"evt_2"}'
    head = signing.headers([new, old], "evt_2", int(time.time()), body)
    assert len(head["webhook-signature"].split()) == 2
    for secret in (old, new):
        standardwebhooks.Webhook(secret).verify(body, head, json_parse=False)


def test_the_body_is_byte_identical_for_a_retry():
    data = {"b": 1, "a": [1, 2]}
    assert signing.body("e", "upload.done", "t", data) == signing.body("e", "upload.done", "t",
                                                                       dict(reversed(data.items())))


def test_signing_secrets_keep_the_previous_one_only_during_its_overlap():
    now = datetime(2026, 12, 6, tzinfo=UTC)
    row = {"secret": "whsec_new", "previous_secret": "whsec_old",
           "previous_secret_until": now + timedelta(hours=1)}
    assert webhooks.signing_secrets(row, now) == ["whsec_new", "whsec_old"]
    assert webhooks.signing_secrets(row, now + timedelta(hours=2)) == ["whsec_new"]
    assert webhooks.signing_secrets({**row, "previous_secret": None}, now) == ["whsec_new"]


def _resolver(*addresses):
    def resolve(host, port, type=None):
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port)) for a in addresses]
    return resolve


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("10.1.2.3", "private"), ("192.168.0.10", "private"),
    ("172.16.5.5", "private"), ("169.254.169.254", "link-local"), ("::1", "loopback"),
    ("fe80::1", "link-local"), ("0.0.0.0", "unspecified"), ("::ffff:127.0.0.1", "loopback"),
    ("100.64.0.1", "not globally routable"), ("224.0.0.1", "multicast"),
])
def test_private_loopback_and_link_local_destinations_are_refused(address, kind):
    with pytest.raises(targets.UnsafeTarget, match=kind):
        targets.resolve("https://hooks.example.org/x", allow_http=False, allow_private=False,
                        resolver=_resolver(address))
    allowed = targets.resolve("https://hooks.example.org/x", allow_http=False,
                              allow_private=True, resolver=_resolver(address))
    assert allowed.address == address


def test_one_private_answer_among_public_ones_refuses_the_host():
    with pytest.raises(targets.UnsafeTarget, match="private"):
        targets.resolve("https://rebind.example.org/", allow_http=False, allow_private=False,
                        resolver=_resolver("93.184.216.34", "10.0.0.1"))


def test_a_public_target_is_pinned_to_the_checked_address():
    t = targets.resolve("https://hooks.example.org:8443/in?x=1", allow_http=False,
                        allow_private=False, resolver=_resolver("93.184.216.34"))
    assert t.pinned_url == "https://93.184.216.34:8443/in?x=1"
    assert t.host_header == "hooks.example.org:8443" and t.host == "hooks.example.org"
    v6 = targets.resolve("https://hooks.example.org/", allow_http=False, allow_private=False,
                         resolver=_resolver("2606:2800:220:1:248:1893:25c8:1946"))
    assert v6.pinned_url == "https://[2606:2800:220:1:248:1893:25c8:1946]:443/"
    assert v6.host_header == "hooks.example.org"


@pytest.mark.parametrize(("url", "reason"), [
    ("http://hooks.example.org/", "http:// is refused"),
    ("ftp://hooks.example.org/", "must be https"),
    ("https://user:pw@hooks.example.org/", "credentials"),
    ("https:///nohost", "no host"),
    ("https://hooks.example.org:99999/", "port"),
    ("https://hooks.example.org/a b", "spaces"),
    ("https://hooks.example.org/" + "a" * 2000, "at most"),
])
def test_urls_the_policy_refuses_before_any_lookup(url, reason):
    def no_lookup(*_, **__):
        raise AssertionError("looked up a refused URL")

    with pytest.raises(targets.UnsafeTarget, match=reason):
        targets.resolve(url, allow_http=False, allow_private=False, resolver=no_lookup)


def test_http_only_when_the_operator_allows_it():
    t = targets.resolve("http://hooks.example.org/x", allow_http=True, allow_private=False,
                        resolver=_resolver("93.184.216.34"))
    assert t.pinned_url == "http://93.184.216.34:80/x"


def test_an_unresolvable_host_is_refused_with_the_reason():
    def fail(*_, **__):
        raise socket.gaierror(-2, "Name or service not known")

    with pytest.raises(targets.UnsafeTarget, match="cannot resolve"):
        targets.resolve("https://nowhere.invalid/", allow_http=False, allow_private=False,
                        resolver=fail)


def test_retries_back_off_exponentially_with_jitter_for_a_day():
    settings = Settings(webhook_retry_base=10, webhook_retry_cap=3 * 3600,
                        webhook_retry_window=24 * 3600)
    rng = random.Random(5)
    delays = [webhooks.retry_delay(n, base=10, cap=3 * 3600, rng=rng) for n in range(1, 10)]
    for n, delay in enumerate(delays, start=1):
        ceiling = min(3 * 3600, 10 * 3 ** (n - 1))
        assert 0.75 * ceiling <= delay <= 1.25 * ceiling
    first = datetime(2026, 12, 6, tzinfo=UTC)
    now, attempts = first, 0
    while True:
        attempts += 1
        later = webhooks.next_attempt(attempts, first=first, now=now, settings=settings,
                                      rng=rng)
        if later is None:
            break
        assert later > now
        now = later
    # About a day of retries, ending on the window's end, in a dozen-odd attempts.
    assert now == first + timedelta(hours=24)
    assert 10 <= attempts <= 20
