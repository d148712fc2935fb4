"""Where a webhook may be sent: the outbound policy, checked when an endpoint is registered
and again before every attempt (DNS answers change).

- ``https`` only, unless the operator allows ``http`` (SKYGATE_WEBHOOK_ALLOW_HTTP);
- no credentials in the URL, a host name or address, a port in 1..65535;
- every address the host resolves to must be public: loopback, private, link-local (cloud
  metadata at 169.254.169.254), multicast, reserved and unspecified ones are refused unless
  the operator allows private destinations (SKYGATE_WEBHOOK_ALLOW_PRIVATE);
- the request then goes to the very address that was checked (:class:`Target` pins it; TLS
  still verifies the certificate against the host name), so a second DNS answer cannot
  point it elsewhere. Redirects are never followed (service/webhooks.py).

Pure apart from the resolver passed in (``socket.getaddrinfo`` by default).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2000
DEFAULT_PORTS = {"https": 443, "http": 80}
MAX_PORT = 65535
IPV6 = 6


class UnsafeTarget(ValueError):
    """The URL is refused by the outbound policy; the message says why."""


@dataclass(frozen=True)
class Target:
    url: str          # as registered
    scheme: str
    host: str         # the name, for the Host header and TLS
    address: str      # the checked IP address the request goes to
    port: int
    path: str         # path and query

    @property
    def pinned_url(self) -> str:
        """The URL with the checked address in place of the host name."""
        ip = ipaddress.ip_address(self.address)
        host = f"[{ip}]" if ip.version == IPV6 else str(ip)
        return f"{self.scheme}://{host}:{self.port}{self.path}"

    @property
    def host_header(self) -> str:
        default = DEFAULT_PORTS[self.scheme]
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


def check_url(url: str, *, allow_http: bool) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of an acceptable URL, before any DNS lookup."""
    if not isinstance(url, str) or len(url) > MAX_URL_LENGTH:
        raise UnsafeTarget(f"a URL of at most {MAX_URL_LENGTH} characters")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise UnsafeTarget("the URL has spaces or control characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise UnsafeTarget("the URL must be https://")
    if scheme == "http" and not allow_http:
        raise UnsafeTarget("http:// is refused: use https:// (an operator may allow http "
                           "with SKYGATE_WEBHOOK_ALLOW_HTTP)")
    if parts.username is not None or parts.password is not None:
        raise UnsafeTarget("credentials in the URL are refused")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UnsafeTarget("the URL has no host")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise UnsafeTarget("the URL's port is not a number in 1..65535") from None
    if not 1 <= port <= MAX_PORT:
        raise UnsafeTarget("the URL's port is not a number in 1..65535")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, host, port, path


def refused_address(address: str) -> str | None:
    """Why an address is not a public destination, or None when it is."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # The most telling name first (127.0.0.1 and 169.254.x are "private" too).
    for kind in ("loopback", "link_local", "unspecified", "multicast", "private",
                 "reserved"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    if not ip.is_global:
        return "not globally routable"
    return None


def resolve(url: str, *, allow_http: bool, allow_private: bool, resolver=None) -> Target:
    """Check the URL and its host's addresses; the Target pins the first acceptable one."""
    scheme, host, port, path = check_url(url, allow_http=allow_http)
    resolver = resolver or socket.getaddrinfo
    try:
        infos = resolver(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UnsafeTarget(f"cannot resolve {host}: {exc}") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise UnsafeTarget(f"{host} resolves to no address")
    if not allow_private:
        # One private answer refuses the host: the next lookup could return that one.
        for address in addresses:
            reason = refused_address(address)
            if reason:
                raise UnsafeTarget(f"{host} resolves to a {reason} address ({address}); an "
                                   "operator may allow private destinations with "
                                   "SKYGATE_WEBHOOK_ALLOW_PRIVATE")
    return Target(url=url, scheme=scheme, host=host, address=addresses[0], port=port,
                  path=path)
