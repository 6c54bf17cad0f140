"""The guarded fetch (``simages_core.fetch``) refuses what it must, before any connection.

Forbidden targets are reached only through a stub resolver that maps test names
(``metadata.test``, ``cgnat.test``, ...) to forbidden addresses, or as literal addresses that are
refused before resolution; ``watch_connections`` (``fetch_support.py``) fails any non-loopback
connect and proves that a refusal connected nowhere. Allowed fetches go to loopback servers.
"""

from __future__ import annotations

import ipaddress

import pytest

from simages_core.fetch import (
    COULD_NOT_FETCH,
    FetchPolicy,
    FetchRefused,
    FetchTooManyRedirects,
    fetch_bytes,
    vet_url,
)

from . import fetch_support
from .fetch_support import (
    JPEG,
    ImageHost,
    Route,
    loopback_policy,
    never_resolve,
    redirect,
    stub_resolver,
)

# The fixtures, under the names the tests ask for.
host = fetch_support.host
watch_connections = fetch_support.watch_connections

# --- refusals before any connection --------------------------------------------------------------

FORBIDDEN_NAMES = {
    "metadata.test": ["169.254.169.254"],
    "cgnat.test": ["100.64.0.7"],
    "private10.test": ["10.0.0.5"],
    "private192.test": ["192.168.1.20"],
    "loopback.test": ["127.0.0.1"],
    "zero.test": ["0.0.0.0"],
    "broadcast.test": ["255.255.255.255"],
    "multicast.test": ["224.0.0.1"],
    "benchmark.test": ["198.18.0.1"],
    "mapped.test": ["::ffff:10.0.0.1"],
    "mapped-metadata.test": ["::ffff:169.254.169.254"],
    "sixtofour.test": ["2002:a9fe:a9fe::1"],
    "teredo.test": ["2001:0:4136:e378:8000:63bf:3fff:fdd2"],
    "nat64.test": ["64:ff9b::a9fe:a9fe"],
    "loopback6.test": ["::1"],
    "linklocal6.test": ["fe80::1"],
    "ula.test": ["fd00::1"],
    "mixed.test": ["93.184.216.34", "10.0.0.1"],  # one private record refuses the name
}


@pytest.mark.parametrize("name", sorted(FORBIDDEN_NAMES))
def test_names_resolving_to_forbidden_addresses_are_refused_before_connecting(name, watch_connections):
    policy = FetchPolicy(resolver=stub_resolver(FORBIDDEN_NAMES))
    with pytest.raises(FetchRefused) as caught:
        fetch_bytes(f"http://{name}/latest/meta-data/", policy)
    assert name in str(caught.value) and "refused" in str(caught.value)
    assert caught.value.public_message == str(caught.value)  # a refusal may be told: nothing was contacted
    assert watch_connections.connects == [] and watch_connections.lookups == []


LITERAL_FORMS = [
    ("decimal", "http://2130706433/", "127.0.0.1"),
    ("octal", "http://0177.0.0.1/", "127.0.0.1"),
    ("hex", "http://0x7f.0.0.1/", "127.0.0.1"),
    ("short-hex", "http://0x7f.1/", "127.0.0.1"),
    ("two-part-metadata", "http://169.254.43518/", "169.254.169.254"),
    ("metadata", "http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
    ("private", "http://10.1.2.3/x.jpg", "10.1.2.3"),
    ("cgnat", "http://100.100.100.200/", "100.100.100.200"),
    ("ipv6-loopback", "http://[::1]:8080/", "::1"),
    ("ipv4-mapped", "http://[::ffff:127.0.0.1]/", "::ffff:7f00:1"),
    ("ipv4-mapped-metadata", "http://[::ffff:169.254.169.254]/", "::ffff:a9fe:a9fe"),
    ("6to4", "http://[2002:0a00:0001::]/", "2002:a00:1::"),
    ("unspecified", "http://0.0.0.0:8000/", "0.0.0.0"),
    ("trailing-dot-loopback", "http://127.0.0.1./", "127.0.0.1"),
]


@pytest.mark.parametrize(
    ("url", "address"), [f[1:] for f in LITERAL_FORMS], ids=[f[0] for f in LITERAL_FORMS]
)
def test_literal_host_forms_are_decoded_and_refused_without_resolving(url, address, watch_connections):
    with pytest.raises(FetchRefused, match="refused") as caught:
        fetch_bytes(url, FetchPolicy(resolver=never_resolve))
    assert address in str(caught.value)
    assert watch_connections.connects == [] and watch_connections.lookups == []


BAD_URLS = [
    ("file", "file:///etc/passwd", "scheme 'file' is not allowed"),
    ("ftp", "ftp://example.test/a.jpg", "scheme 'ftp' is not allowed"),
    ("gopher", "gopher://example.test/", "scheme 'gopher' is not allowed"),
    ("data", "data:image/png;base64,AAAA", "scheme 'data' is not allowed"),
    ("no-host", "http://", "has no host"),
    ("no-host-with-userinfo", "http://user@/x", "has no host"),
    ("bad-port", "http://img.test:99999/", "not a valid URL"),
    ("port-zero", "http://img.test:0/", "port 0"),
    ("zone-id", "http://[fe80::1%25eth0]/", "zone id"),
    ("five-numbers", "http://1.2.3.4.5/", "not an IPv4 address"),
    ("octet-overflow", "http://256.1.1.1/", "out of range"),
    ("bad-octal", "http://08.0.0.1/", "not a valid IPv4 address"),
    ("space-in-host", "http://exa mple.test/", "not a valid host name"),
    ("invalid-tld", "http://anything.invalid/a.jpg", "cannot be resolved"),
    ("unknown-name", "http://nowhere.test/a.jpg", "cannot be resolved"),
]


@pytest.mark.parametrize(("url", "expected"), [b[1:] for b in BAD_URLS], ids=[b[0] for b in BAD_URLS])
def test_bad_urls_name_the_problem(url, expected, watch_connections):
    with pytest.raises(FetchRefused) as caught:
        fetch_bytes(url, FetchPolicy(resolver=stub_resolver({})))
    assert expected in str(caught.value)
    assert watch_connections.connects == [] and watch_connections.lookups == []


def test_multicast_and_unspecified_are_refused_even_when_allow_listed_or_trusted(watch_connections):
    resolve = stub_resolver({"multicast.test": ["224.0.0.1"], "zero.test": ["0.0.0.0"]})
    for policy in (
        FetchPolicy(resolver=resolve, allow_networks=("0.0.0.0/0",)),
        FetchPolicy(resolver=resolve, untrusted_caller=False),
    ):
        for name in ("multicast.test", "zero.test"):
            with pytest.raises(FetchRefused, match="multicast, broadcast or unspecified"):
                fetch_bytes(f"http://{name}/", policy)
    assert watch_connections.connects == []


def test_allow_list_admits_exactly_its_networks(watch_connections):
    resolve = stub_resolver({"a.test": ["10.0.0.5"], "b.test": ["10.9.0.5"], "c.test": ["::ffff:10.9.1.1"]})
    policy = FetchPolicy(resolver=resolve, allow_networks=("10.9.0.0/16",))
    with pytest.raises(FetchRefused, match=r"10\.0\.0\.5"):
        fetch_bytes("http://a.test/", policy)
    # Vetting alone (no connection is ever attempted to these): admitted, and pinned to that address.
    assert vet_url("http://b.test:8080/x", policy).address == ipaddress.ip_address("10.9.0.5")
    assert vet_url("http://c.test/", policy).address == ipaddress.ip_address("::ffff:10.9.1.1")
    assert watch_connections.connects == []


# --- fetching from loopback when allowed -------------------------------------------------------------


def test_allow_listed_loopback_name_connects_to_the_vetted_address_with_the_original_host(
    host, watch_connections
):
    host.route("/cat.jpg", Route())
    got = fetch_bytes(f"http://img.test:{host.port}/cat.jpg?size=big", loopback_policy())
    assert got.data == JPEG and got.content_type == "image/jpeg"
    assert got.url == f"http://img.test:{host.port}/cat.jpg?size=big"
    assert host.seen[0].headers["Host"] == f"img.test:{host.port}"
    assert host.seen[0].path == "/cat.jpg?size=big"
    assert set(watch_connections.connects) == {"127.0.0.1"} and watch_connections.lookups == []


def test_loopback_is_refused_without_the_allow_list(host, watch_connections):
    host.route("/cat.jpg", Route())
    with pytest.raises(FetchRefused, match="loopback"):
        fetch_bytes(f"http://img.test:{host.port}/cat.jpg", loopback_policy(allow_networks=()))
    assert host.seen == [] and watch_connections.connects == []


def test_a_trusted_caller_reaches_loopback_without_an_allow_list(host):
    host.route("/cat.jpg", Route())
    policy = loopback_policy(allow_networks=(), untrusted_caller=False)
    assert fetch_bytes(f"http://img.test:{host.port}/cat.jpg", policy).data == JPEG


def test_the_name_is_resolved_once_per_hop_so_dns_cannot_rebind(host, watch_connections):
    """A resolver that answers loopback first and the metadata address afterwards."""
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])
    calls: list[str] = []

    def rebinding(name: str, port: int) -> list[str]:
        calls.append(name)
        return next(answers)

    host.route("/cat.jpg", Route())
    got = fetch_bytes(f"http://rebind.test:{host.port}/cat.jpg", loopback_policy(resolver=rebinding))
    assert got.data == JPEG and calls == ["rebind.test"]
    assert set(watch_connections.connects) == {"127.0.0.1"}


# --- redirects -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "location",
    [
        "http://metadata.test/latest/meta-data/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[::ffff:10.0.0.1]/",
        "http://0x0a.0.0.1/",
    ],
)
def test_redirects_are_checked_again_before_connecting(host, location, watch_connections):
    host.route("/start", redirect(location))
    policy = loopback_policy(allow_networks=("127.0.0.1/32",))
    with pytest.raises(FetchRefused, match=r"after a redirect"):
        fetch_bytes(f"http://img.test:{host.port}/start", policy)
    assert host.hits("/start") == 1
    assert set(watch_connections.connects) == {"127.0.0.1"}


def test_redirect_to_another_scheme_is_refused(host):
    host.route("/start", redirect("file:///etc/passwd"))
    with pytest.raises(FetchRefused, match="scheme 'file'"):
        fetch_bytes(f"http://img.test:{host.port}/start", loopback_policy())


def test_redirects_are_followed_up_to_the_limit(host):
    host.route("/a", redirect("/b", 301))
    host.route("/b", redirect(f"http://other.test:{host.port}/c", 307))
    host.route("/c", Route())
    assert fetch_bytes(f"http://img.test:{host.port}/a", loopback_policy()).data == JPEG
    assert host.seen[-1].headers["Host"] == f"other.test:{host.port}"
    host.route("/loop", redirect("/loop"))
    with pytest.raises(FetchTooManyRedirects) as caught:
        fetch_bytes(f"http://img.test:{host.port}/loop", loopback_policy(max_redirects=3))
    assert host.hits("/loop") == 4 and caught.value.public_message == COULD_NOT_FETCH


# --- proxies ---------------------------------------------------------------------------------------------


def test_environment_proxies_are_ignored(host, monkeypatch):
    trap = ImageHost()  # would answer every request if the fetch went through it
    try:
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{trap.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        host.route("/cat.jpg", Route())
        assert fetch_bytes(f"http://img.test:{host.port}/cat.jpg", loopback_policy()).data == JPEG
        assert trap.seen == [] and host.hits("/cat.jpg") == 1
    finally:
        trap.close()


def test_an_explicit_proxy_is_asked_for_the_vetted_address(host):
    proxy = ImageHost()
    try:
        proxy.route("/cat.jpg", Route())
        policy = loopback_policy(proxy_url=f"http://127.0.0.1:{proxy.port}")
        assert fetch_bytes(f"http://img.test:{host.port}/cat.jpg", policy).data == JPEG
        assert proxy.seen[0].path == f"http://127.0.0.1:{host.port}/cat.jpg"
        assert proxy.seen[0].headers["Host"] == f"img.test:{host.port}"
        assert host.seen == []
    finally:
        proxy.close()
