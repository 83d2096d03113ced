"""Outgoing HTTP to user-chosen URLs (webhooks), without server-side request forgery.

Any user may subscribe a URL, so the worker must not become a way to reach what only the server can
reach. Three rules, each closing a class of bypass:

1. One strict parser (`parse_url`). The URL is parsed once, by this module, and the parsed result is
   both what is checked and what is connected to; no other URL parser (urllib, requests, urllib3)
   ever sees the user's text. Anything a lenient parser could read differently is refused: characters
   outside RFC 3986 (backslashes, spaces, controls, non-ASCII), credentials (`user:pass@`),
   fragments, non-canonical IPv4 forms (`127.1`, `0x7f.0.0.1`, `2130706433`, `0177.0.0.1`),
   IPv6 zone IDs, schemes other than http and https.
2. One resolution. The host name is resolved once; every address it resolves to is checked
   (`address_refusal`), and a name with a single refused address is refused.
3. Pinned connection. The connection goes to a checked address (`post`), never to the name, so a
   second DNS answer (DNS rebinding) is never asked for. The Host header carries the name, and for
   https the TLS handshake sends it as SNI and verifies the certificate against it. Environment
   proxies are not used (a proxy would resolve the name again).

Refused addresses: link-local (cloud metadata at 169.254.169.254), multicast, unspecified, reserved,
"this network" (0.0.0.0/8) and broadcast always; loopback and the portal host's own addresses unless
SEM_WEBHOOK_ALLOW_LOOPBACK. IPv4 addresses embedded in IPv6 ones (IPv4-mapped, 6to4, Teredo, NAT64)
are checked as well. Private networks stay allowed: that is where a lab's LIMS lives; only the cloud
metadata services on private and shared ranges are refused there (fd00:ec2::254, 100.100.100.200,
192.0.0.192, 168.63.129.16).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from dataclasses import dataclass

from django.conf import settings

MAX_URL_CHARS = 500  # WebhookSubscription.url's max_length
RESPONSE_READ_BYTES = 64 * 1024  # at most this much of an answer is read

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# RFC 3986: unreserved, sub-delims, gen-delims and "%" (checked below to start an escape). Nothing else.
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_URL_SHAPE = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<authority>[^/?#]*)(?P<target>[^#]*)(?P<fragment>#.*)?", re.DOTALL
)
_AUTHORITY = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.\-]+))(?::(?P<port>[0-9]{1,5}))?")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_BROADCAST = ipaddress.ip_address("255.255.255.255")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class RefusedURL(ValueError):
    """The URL is malformed or points where the portal must not send requests; str() says why."""


class DeliveryConnectionError(ConnectionError):
    """The destination could not be reached (resolution, connection, TLS, timeout): worth a retry."""


@dataclass(frozen=True)
class ParsedURL:
    scheme: str  # "http" or "https"
    host: str  # lower-case name, dotted-quad IPv4, or compressed IPv6 without brackets
    port: int
    target: str  # path and query, starting with "/"
    ip: IPAddress | None  # the host when it is an address literal

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if self.ip is not None and self.ip.version == 6 else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The normalised URL: what is stored, shown and delivered to."""
        return f"{self.scheme}://{self.netloc}{self.target}"


def parse_url(text: str) -> ParsedURL:
    if not isinstance(text, str) or not text:
        raise RefusedURL("the URL is empty")
    if len(text) > MAX_URL_CHARS:
        raise RefusedURL(f"the URL is longer than {MAX_URL_CHARS} characters")
    if not _URL_CHARS.fullmatch(text):
        bad = next(char for char in text if not _URL_CHARS.fullmatch(char))
        raise RefusedURL(f"the URL contains {bad!r}, which is not allowed in a URL (percent-encode it in the path)")
    shape = _URL_SHAPE.fullmatch(text)
    if shape is None:
        raise RefusedURL("use an absolute http:// or https:// URL")
    scheme = shape["scheme"].lower()
    if scheme not in _DEFAULT_PORTS:
        raise RefusedURL("use an http:// or https:// URL")
    if shape["fragment"] is not None:
        raise RefusedURL("a URL fragment (#...) is never sent; remove it")
    authority = shape["authority"]
    if "@" in authority:
        raise RefusedURL("credentials in the URL (user:password@) are not allowed; receivers check the signature")
    parts = _AUTHORITY.fullmatch(authority)
    if parts is None:
        raise RefusedURL(
            "the host part is not a host name, an IPv4 address or a bracketed IPv6 address, with an optional :port"
        )
    port = _DEFAULT_PORTS[scheme] if parts["port"] is None else int(parts["port"])
    if not 1 <= port <= 65535:
        raise RefusedURL("the port must be between 1 and 65535")
    host, ip = _parse_host(parts["ipv6"], parts["name"])
    return ParsedURL(scheme=scheme, host=host, port=port, target=_parse_target(shape["target"]), ip=ip)


def _parse_host(ipv6: str | None, name: str | None) -> tuple[str, IPAddress | None]:
    if ipv6 is not None:
        try:
            address = ipaddress.IPv6Address(ipv6)
        except ValueError:
            raise RefusedURL(f"[{ipv6}] is not an IPv6 address") from None
        return str(address), address
    name = name.lower()
    if len(name) > 253:
        raise RefusedURL("the host name is longer than 253 characters")
    labels = name.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        # Resolvers read "127.1", "0x7f.0.0.1", "2130706433" or "0177.0.0.1" as addresses: only the
        # canonical dotted quad is accepted, so that what is checked is what is connected to.
        try:
            address = ipaddress.IPv4Address(name)
        except ValueError:
            address = None
        if address is None or str(address) != name:
            raise RefusedURL(f"{name} is not a host name nor an IPv4 address in dotted-quad form (a.b.c.d)")
        return name, address
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise RefusedURL(
            f"{name!r} is not a valid host name (letters, digits and hyphens between dots; "
            "international names in their xn-- form)"
        )
    return name, None


def _parse_target(target: str) -> str:
    if "[" in target or "]" in target:
        raise RefusedURL("brackets are only allowed around an IPv6 address; percent-encode them in the path")
    if _BAD_ESCAPE.search(target):
        raise RefusedURL("a % in the URL must start a percent-escape (%XX)")
    path, question, query = target.partition("?")
    return _remove_dot_segments(path or "/") + question + query


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 for an absolute path: "/a/./b/../c" -> "/a/c"."""
    segments = path.split("/")[1:]
    output: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if output:
                output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/" + "/".join(output)


# --- Destination check -------------------------------------------------------------------------------


def resolve(parsed: ParsedURL) -> list[IPAddress]:
    """The addresses to check and to connect to, in the resolver's order; the one DNS look-up."""
    if parsed.ip is not None:
        return [parsed.ip]
    try:
        infos = socket.getaddrinfo(parsed.host, parsed.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise DeliveryConnectionError(f"cannot resolve {parsed.host}: {exc}") from None
    addresses: list[IPAddress] = []
    for info in infos:
        if info[0] not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise DeliveryConnectionError(f"cannot resolve {parsed.host}: no IPv4 or IPv6 address")
    return addresses


def _addresses_to_check(address: IPAddress) -> list[IPAddress]:
    """The address and the IPv4 addresses it stands for. An IPv4-mapped address (::ffff:a.b.c.d) is
    only an encoding of a.b.c.d (a dual-stack socket connects there), so a.b.c.d alone is checked;
    6to4, Teredo and NAT64 addresses reach their embedded IPv4 address through a gateway, so both are."""
    if address.version == 4:
        return [address]
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    embedded = [address, address.sixtofour, *(address.teredo or ())]
    if address in _NAT64:
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [candidate for candidate in embedded if candidate is not None]


# Cloud metadata services outside the link-local range, on private and shared ranges that stay allowed
# otherwise: AWS's IPv6 IMDS, Alibaba Cloud, Oracle Cloud, Azure's WireServer.
_CLOUD_METADATA = tuple(
    ipaddress.ip_network(network)
    for network in ("fd00:ec2::/32", "100.100.100.200/32", "192.0.0.192/32", "168.63.129.16/32")
)


def address_refusal(address: IPAddress) -> str | None:
    """Why no request may go to this address ("a link-local ... address"), or None."""
    candidates = _addresses_to_check(address)
    for candidate in candidates:
        if candidate.is_loopback:  # before is_reserved: Python counts ::1 in the reserved ::/8
            continue
        if (
            candidate.is_link_local
            or candidate.is_multicast
            or candidate.is_unspecified
            or candidate.is_reserved
            or candidate in _THIS_NETWORK
            or candidate == _BROADCAST
        ):
            return "a link-local, multicast, reserved or unspecified address"
        if any(candidate in network for network in _CLOUD_METADATA):
            return "a cloud metadata service"
    if settings.SEM_WEBHOOK_ALLOW_LOOPBACK:
        return None
    for candidate in candidates:
        if candidate.is_loopback or is_own_address(candidate):
            return "this server itself (set SEM_WEBHOOK_ALLOW_LOOPBACK to allow)"
    return None


def is_own_address(address: IPAddress) -> bool:
    """True for an address of one of this host's interfaces: only those can be bound to."""
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        return False
    return True


def checked_destination(url: str) -> tuple[ParsedURL, list[IPAddress]]:
    """Parse, resolve once and check every address. Raises RefusedURL when the URL must not be used
    and DeliveryConnectionError when the name does not resolve (now)."""
    parsed = parse_url(url)
    addresses = resolve(parsed)
    for address in addresses:
        refusal = address_refusal(address)
        if refusal:
            where = f"{address} is" if parsed.ip is not None else f"{parsed.host} resolves to {address},"
            raise RefusedURL(f"{where} {refusal}")
    return parsed, addresses


def destination_refusal(url: str) -> str | None:
    """For a form or serializer: why this URL is refused, or None. A name that does not resolve is not
    refused here; its deliveries fail as connection errors and are retried."""
    try:
        checked_destination(url)
    except RefusedURL as exc:
        return str(exc)
    except DeliveryConnectionError:
        return None
    return None


# --- Pinned delivery ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    text: str  # the first RESPONSE_READ_BYTES of the body, decoded leniently


def post(url: str, body: bytes, headers: dict[str, str], *, timeout_s: float) -> Answer:
    """POST to a checked address of `url`, without redirects, proxies or a second DNS look-up.

    Raises RefusedURL (final) or DeliveryConnectionError (worth a retry)."""
    parsed, addresses = checked_destination(url)
    failure: Exception | None = None
    for address in addresses:  # every one was checked; the next is tried when one cannot be connected to
        try:
            return _post_to(parsed, address, body, headers, timeout_s)
        except DeliveryConnectionError as exc:
            failure = exc
    raise failure


def _post_to(parsed: ParsedURL, address: IPAddress, body: bytes, headers: dict[str, str], timeout_s: float) -> Answer:
    import urllib3
    from urllib3.exceptions import HTTPError as Urllib3Error

    timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
    options = {"host": str(address), "port": parsed.port, "timeout": timeout, "retries": False, "maxsize": 1}
    if parsed.scheme == "https":
        pool_class = urllib3.HTTPSConnectionPool
        options.update(
            cert_reqs="CERT_REQUIRED",
            ca_certs=_ca_bundle(),
            assert_hostname=parsed.host,
            server_hostname=parsed.host if parsed.ip is None else None,
        )
    else:
        pool_class = urllib3.HTTPConnectionPool
    # identity, and no decoding: a compressed answer cannot inflate in the worker's memory.
    request_headers = {
        **headers,
        "Host": parsed.netloc,
        "Content-Length": str(len(body)),
        "Accept-Encoding": "identity",
    }
    try:
        with pool_class(**options) as pool:
            response = pool.urlopen(
                "POST",
                parsed.target,
                body=body,
                headers=request_headers,
                redirect=False,
                retries=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
            )
            try:
                data = _read_some(response, deadline=time.monotonic() + timeout_s)
            finally:
                response.release_conn()
    except (Urllib3Error, OSError) as exc:
        raise DeliveryConnectionError(f"{parsed.netloc} ({address}): {type(exc).__name__}: {exc}") from None
    return Answer(response.status, data.decode("utf-8", errors="replace"))


def _read_some(response, *, deadline: float) -> bytes:
    """At most RESPONSE_READ_BYTES of the body, for at most about the timeout: a receiver that drips
    its answer a byte at a time cannot hold the worker (each read still has the read timeout)."""
    chunks: list[bytes] = []
    size = 0
    while size < RESPONSE_READ_BYTES and time.monotonic() < deadline:
        chunk = response.read(min(8192, RESPONSE_READ_BYTES - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _ca_bundle() -> str | None:
    try:
        import certifi
    except ImportError:  # urllib3 then uses the system's trust store
        return None
    return certifi.where()
