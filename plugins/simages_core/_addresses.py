"""Which hosts and addresses an outbound fetch may reach, and URLs made safe to print.

Pure functions, no I/O: ``simages_core.fetch`` parses the host here, resolves it, and asks
``refusal_reason`` about every address before it connects to one of them.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# IPv6 ranges that carry (or translate to) an IPv4 address: a public-looking IPv6 address in
# them can reach a private IPv4 host through a relay or gateway, so an untrusted caller never
# gets them. Python 3.11 calls several of them global.
_TRANSITION = {
    "6to4": ipaddress.ip_network("2002::/16"),
    "Teredo": ipaddress.ip_network("2001::/32"),
    "NAT64": ipaddress.ip_network("64:ff9b::/96"),
    "local NAT64": ipaddress.ip_network("64:ff9b:1::/48"),
    "IPv4-compatible": ipaddress.ip_network("::/96"),
}
# Ranges some Python versions call global although nothing public is served there.
_NOT_PUBLIC = (
    ipaddress.ip_network("100.64.0.0/10"),  # shared address space (carrier-grade NAT)
    ipaddress.ip_network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.ip_network("192.88.99.0/24"),  # 6to4 relay anycast
    ipaddress.ip_network("2001:20::/28"),  # ORCHIDv2
    ipaddress.ip_network("3fff::/20"),  # documentation
    ipaddress.ip_network("5f00::/16"),  # segment routing
)
_CGNAT = _NOT_PUBLIC[0]
_HOST_NAME = re.compile(r"^(?=.{1,253}\.?$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_-]{1,63}\.?$")
_LEGACY_IPV4_PART = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


class HostError(ValueError):
    """A URL host that is not a usable name or address; the message says why."""


def parse_networks(values: Iterable[str | IpNetwork]) -> tuple[IpNetwork, ...]:
    """Networks from CIDR strings (``"10.0.0.0/8"``, ``"::1"``); ``ValueError`` names a bad one."""
    networks: list[IpNetwork] = []
    for value in values:
        if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            networks.append(value)
            continue
        text = str(value).strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(
                f"invalid network in allow-list: {text!r} (expected CIDR like 10.0.0.0/8)"
            ) from None
    return tuple(networks)


def parse_host(host: str) -> IpAddress | str:
    """The host as an address if it is one (in any form a resolver would accept), else the IDNA name.

    Numeric forms that ``inet_aton`` accepts (``2130706433``, ``0177.0.0.1``, ``0x7f.1``) are
    decoded here as the WHATWG URL standard does, so they are checked as the address they are
    and never handed to a resolver that might read them differently.
    """
    host = host.strip().lower()
    if not host:
        raise HostError("has no host: expected an http or https URL with a host")
    if "%" in host:
        raise HostError(f"host {host!r} has a zone id or percent-escape: not allowed")
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.strip("[]"))
        except ValueError:
            raise HostError(f"host {host!r} is not a valid IPv6 address") from None
    labels = host.rstrip(".").split(".")
    if _LEGACY_IPV4_PART.match(labels[-1]):  # ends in a number: an IPv4 address or nothing
        return _legacy_ipv4(host, labels)
    try:
        name = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise HostError(f"host {host!r} is not a valid host name") from None
    if not _HOST_NAME.match(name):
        raise HostError(f"host {host!r} is not a valid host name")
    return name


def _legacy_ipv4(host: str, labels: list[str]) -> ipaddress.IPv4Address:
    if len(labels) > 4 or not all(_LEGACY_IPV4_PART.match(label) for label in labels):
        raise HostError(f"host {host!r} ends in a number but is not an IPv4 address")
    numbers = []
    for label in labels:
        try:
            if label.startswith("0x"):
                numbers.append(int(label[2:] or "0", 16))
            elif len(label) > 1 and label.startswith("0"):
                numbers.append(int(label, 8))
            else:
                numbers.append(int(label))
        except ValueError:
            raise HostError(f"host {host!r} is not a valid IPv4 address") from None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        raise HostError(f"host {host!r} is out of range for an IPv4 address")
    value = last
    for position, number in enumerate(head):
        value += number << (8 * (3 - position))
    return ipaddress.IPv4Address(value)


def _embedded_ipv4(address: IpAddress) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]
        compatible = address in _TRANSITION["IPv4-compatible"] and int(address) > 1  # not :: or ::1
        if compatible or address in _TRANSITION["NAT64"] or address in _TRANSITION["local NAT64"]:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _kind(address: IpAddress) -> str:
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local, where cloud metadata lives"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "carrier-grade NAT"
    if address.is_private:
        return "private"
    return "reserved"


def refusal_reason(address: IpAddress, *, untrusted: bool, allow: tuple[IpNetwork, ...]) -> str | None:
    """Why a fetch must not connect to ``address``, or ``None`` when it may.

    Multicast and unspecified addresses are never a web server. An allow-listed network always
    wins (for the address itself or the IPv4 address an IPv6 form carries). Otherwise an
    untrusted caller only reaches global unicast addresses outside the transition ranges.
    """
    embedded = _embedded_ipv4(address)
    forms = [address] if embedded is None else [address, embedded]
    for form in forms:
        if form.is_multicast or form.is_unspecified or form == ipaddress.IPv4Address("255.255.255.255"):
            return f"{address}, a multicast, broadcast or unspecified address"
    if any(form in network for form in forms for network in allow if form.version == network.version):
        return None
    if not untrusted:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        for name, network in _TRANSITION.items():
            if address in network and (name != "IPv4-compatible" or embedded is not None):
                return f"{address}, an IPv6 {name} address (carries {embedded}), a non-public address"
    target = embedded if embedded is not None else address
    if not target.is_global or any(target in n for n in _NOT_PUBLIC if n.version == target.version):
        return f"{address}, a non-public address ({_kind(target)})"
    return None


def redact_url(url: str) -> str:
    """``url`` without the credentials of its userinfo (``https://***@host/...``), safe to log or show.

    Never raises: a string that is not a parsable URL has anything before an ``@`` in its
    authority replaced all the same.
    """
    try:
        parts = urlsplit(url)
        if "@" not in parts.netloc:
            return url
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))
    except ValueError:
        return redact_text(url)


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s@]*@")


def redact_text(text: str) -> str:
    """Every ``scheme://user:password@`` inside free text (an exception message, a log line) redacted."""
    return _USERINFO.sub(r"\1***@", text)


class RedactingFilter(logging.Filter):
    """A logging filter that strips URL credentials from a record's message and traceback.

    Add it to a logger (or handler) whose records may quote URLs or exception messages.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True
