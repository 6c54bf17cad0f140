"""The guarded fetch (``simages_core.fetch``) as a transport: caps, deadline, retries, TLS to the
pinned address, credentials, and the error classes; every server is on loopback.
"""

from __future__ import annotations

import base64
import datetime as dt
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from simages_core import SimilarImagesError
from simages_core.fetch import (
    COULD_NOT_FETCH,
    FetchConnectError,
    FetchContentTypeError,
    Fetcher,
    FetchError,
    FetchHTTPError,
    FetchInterrupted,
    FetchPolicy,
    FetchRefused,
    FetchTimeout,
    FetchTooLarge,
    fetch_bytes,
    fetch_to_file,
    redact_text,
    redact_url,
)

from . import fetch_support
from .fetch_support import (
    JPEG,
    ImageHost,
    Route,
    loopback_policy,
    redirect,
    stub_resolver,
)

# The fixtures, under the names the tests ask for.
host = fetch_support.host
watch_connections = fetch_support.watch_connections

# --- what the answer may be ------------------------------------------------------------------------------


def test_status_errors_are_final_for_4xx_and_retried_for_5xx(host):
    host.route("/gone.jpg", Route(404, b"secret internal page", {"content-type": "text/plain"}))
    with pytest.raises(FetchHTTPError) as caught:
        fetch_bytes(f"http://img.test:{host.port}/gone.jpg", loopback_policy())
    assert caught.value.status == 404 and "HTTP 404" in str(caught.value)
    assert "secret" not in str(caught.value) and caught.value.public_message == COULD_NOT_FETCH
    assert host.hits("/gone.jpg") == 1
    host.route("/flaky.jpg", Route(503, b"busy", {"content-type": "text/plain"}), Route())
    assert fetch_bytes(f"http://img.test:{host.port}/flaky.jpg", loopback_policy()).data == JPEG
    assert host.hits("/flaky.jpg") == 2


def test_content_type_is_checked(host):
    host.route("/page", Route(body=b"<html>", headers={"content-type": "text/html; charset=utf-8"}))
    host.route("/untyped", Route(headers={}))
    for path in ("/page", "/untyped"):
        with pytest.raises(FetchContentTypeError, match="expected image/"):
            fetch_bytes(f"http://img.test:{host.port}{path}", loopback_policy())
    assert (
        fetch_bytes(f"http://img.test:{host.port}/page", loopback_policy(content_types=())).data == b"<html>"
    )
    policy = loopback_policy(content_types=("text/html",))
    assert fetch_bytes(f"http://img.test:{host.port}/page", policy).content_type == "text/html"


def test_size_cap_holds_for_declared_and_undeclared_lengths(host):
    big = b"\xff" * 5000
    host.route("/declared", Route(body=big))
    host.route("/streamed", Route(body=big, send_length=False))
    for path in ("/declared", "/streamed"):
        with pytest.raises(FetchTooLarge, match="larger than 1,000 bytes"):
            fetch_bytes(f"http://img.test:{host.port}{path}", loopback_policy(max_bytes=1000))


def test_overall_deadline_stops_a_slow_body(host):
    host.route("/drip", Route(drip=0.05))
    started = time.monotonic()
    with pytest.raises(FetchTimeout, match=r"longer than 0\.5 s"):
        fetch_bytes(f"http://img.test:{host.port}/drip", loopback_policy(deadline=0.5, timeout=5))
    assert time.monotonic() - started < 5  # the drip alone would take ~50 s


def test_a_silent_server_times_out():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        port = silent.getsockname()[1]
        with pytest.raises(FetchTimeout) as caught:
            fetch_bytes(f"http://img.test:{port}/x.jpg", loopback_policy(timeout=0.3, retries=0))
        assert caught.value.public_message == COULD_NOT_FETCH
    finally:
        silent.close()


def test_connection_refused_is_a_connect_error():
    with socket.socket() as probe:  # a port nobody listens on: bound, then released
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(FetchConnectError):
        fetch_bytes(f"http://img.test:{port}/x.jpg", loopback_policy(retries=0))


def test_a_body_that_breaks_off_is_fetched_once_more(host):
    host.route("/once", Route(cut_after=100), Route())
    assert fetch_bytes(f"http://img.test:{host.port}/once", loopback_policy()).data == JPEG
    assert host.hits("/once") == 2
    host.route("/always", Route(cut_after=100))
    with pytest.raises(FetchInterrupted):
        fetch_bytes(f"http://img.test:{host.port}/always", loopback_policy())
    assert host.hits("/always") == 2


def test_fetch_to_file_writes_the_body_and_removes_a_failed_file(host, tmp_path):
    host.route("/cat.jpg", Route())
    host.route("/huge.jpg", Route(body=b"\xff" * 5000, send_length=False))
    got = fetch_to_file(f"http://img.test:{host.port}/cat.jpg", tmp_path / "cat.jpg", loopback_policy())
    assert got.size == len(JPEG) and (tmp_path / "cat.jpg").read_bytes() == JPEG
    with pytest.raises(FetchTooLarge):
        fetch_to_file(
            f"http://img.test:{host.port}/huge.jpg", tmp_path / "huge.jpg", loopback_policy(max_bytes=1000)
        )
    assert not (tmp_path / "huge.jpg").exists()
    (tmp_path / "keep.jpg").write_bytes(b"mine")  # refused before opening: the file is not touched
    with pytest.raises(FetchRefused):
        fetch_to_file("http://metadata.test/x.jpg", tmp_path / "keep.jpg", loopback_policy())
    assert (tmp_path / "keep.jpg").read_bytes() == b"mine"


def test_a_fetcher_reuses_its_connection_to_the_same_host(host):
    host.route("/cat.jpg", Route())
    with Fetcher(loopback_policy()) as fetcher:
        for _ in range(3):
            assert fetcher.fetch_bytes(f"http://img.test:{host.port}/cat.jpg").data == JPEG
    assert len({seen.client_port for seen in host.seen}) == 1


def test_ipv6_loopback_by_literal_and_by_name():
    class Server6(ThreadingHTTPServer):
        address_family = socket.AF_INET6

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "image/jpeg")
            self.send_header("content-length", str(len(JPEG)))
            self.end_headers()
            self.wfile.write(JPEG)

        def log_message(self, *args: Any) -> None:
            pass

    try:
        server = Server6(("::1", 0), Handler)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        port = server.server_address[1]
        policy = FetchPolicy(allow_networks=("::1/128",), resolver=stub_resolver({"six.test": ["::1"]}))
        assert fetch_bytes(f"http://[::1]:{port}/cat.jpg", policy).data == JPEG
        assert fetch_bytes(f"http://six.test:{port}/cat.jpg", policy).data == JPEG
        with pytest.raises(FetchRefused, match="loopback"):
            fetch_bytes(f"http://[::1]:{port}/cat.jpg", policy.replace(allow_networks=()))
    finally:
        server.shutdown()
        server.server_close()


def test_open_reads_only_what_is_needed(host):
    host.route("/cat.jpg", Route())
    with (
        Fetcher(loopback_policy()) as fetcher,
        fetcher.open(f"http://img.test:{host.port}/cat.jpg") as response,
    ):
        first = next(response.iter_chunks(4))
    assert first == JPEG[:4]


# --- TLS: the pinned address, the original name for SNI and the certificate ------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "img.test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("img.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return folder / "cert.pem", folder / "key.pem"


def test_https_to_the_vetted_address_checks_the_original_name(certificate):
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    names_seen: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: names_seen.append(name)
    server = ImageHost(tls=context)
    try:
        server.route("/cat.jpg", Route())
        policy = loopback_policy(ca_certs=str(cert))
        got = fetch_bytes(f"https://img.test:{server.port}/cat.jpg", policy)
        assert got.data == JPEG and names_seen == ["img.test"]
        assert server.seen[0].headers["Host"] == f"img.test:{server.port}"
        with pytest.raises(FetchConnectError, match="TLS"):  # the certificate is not for other.test
            fetch_bytes(f"https://other.test:{server.port}/cat.jpg", policy.replace(retries=0))
    finally:
        server.close()


# --- secrets -----------------------------------------------------------------------------------------------


def test_url_credentials_go_to_their_origin_only_and_never_into_messages(host):
    host.route("/private.jpg", Route())
    host.route("/hop", redirect(f"http://other.test:{host.port}/private.jpg"))
    host.route("/missing.jpg", Route(404, b"no", {"content-type": "text/plain"}))
    policy = loopback_policy()
    got = fetch_bytes(f"http://alice:hunter2@img.test:{host.port}/private.jpg", policy)
    expected = "Basic " + base64.b64encode(b"alice:hunter2").decode()
    assert host.seen[-1].headers["Authorization"] == expected and "hunter2" not in got.url
    fetch_bytes(f"http://alice:hunter2@img.test:{host.port}/hop", policy)
    assert "Authorization" not in host.seen[-1].headers  # the redirect left the origin
    with pytest.raises(FetchHTTPError) as caught:
        fetch_bytes(f"http://alice:hunter2@img.test:{host.port}/missing.jpg", policy)
    assert "hunter2" not in str(caught.value) and "hunter2" not in repr(caught.value)


def test_redaction_helpers():
    assert redact_url("https://user:pw@api.test:8443/a?b=1") == "https://***@api.test:8443/a?b=1"
    assert redact_url("https://api.test/a") == "https://api.test/a"
    assert redact_url("http://token@[::1]:80/") == "http://***@[::1]:80/"
    assert redact_url("http://u:p@[bad") == "http://***@[bad"  # unparsable: still redacted, no error
    text = "GET http://a:b@x.test/ failed, then https://c@y.test/z"
    assert redact_text(text) == "GET http://***@x.test/ failed, then https://***@y.test/z"


def test_fetch_errors_are_core_errors():
    assert issubclass(FetchError, SimilarImagesError)
    with pytest.raises(ValueError, match=r"FetchPolicy\.timeout must be > 0"):
        FetchPolicy(timeout=0)
    with pytest.raises(ValueError, match="invalid network in allow-list: 'nope'"):
        FetchPolicy(allow_networks=("nope",))
    with pytest.raises(ValueError, match=r"proxy_url must be an http\(s\) URL, got 'socks5://\*\*\*@p.test'"):
        FetchPolicy(proxy_url="socks5://user:secret@p.test")
