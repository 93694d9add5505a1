"""Addresses and service endpoints, checked where they enter: the CLI, the TUI and STORE handling.

A node address is HOST:PORT (IPv6 in brackets). A service endpoint is what a provider
advertises for clients to reach it: HOST:PORT, [IPv6]:PORT, or a URI with a scheme
(`https://calc.example:8443/v1`, `unix:/run/calc.sock`). Anything else is refused here
with a message that says what was expected, so nonsense is never signed, stored and later
discovered by clients.
"""

from __future__ import annotations

import ipaddress
import re

from .constants import MAX_VALUE_BYTES

Address = tuple[str, int]

# RFC 3986 scheme, then at least one character of scheme-specific part.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s]+$")
# RFC 1123 host names: labels of letters, digits and hyphens, not starting or ending with one.
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
MAX_HOST_NAME_BYTES = 253  # RFC 1035's limit on a whole name


class EndpointError(ValueError):
    """An address or endpoint that is not well formed; the message says what was expected."""


def _check_host(host: str, text: str) -> str:
    if not host:
        raise EndpointError(f"{text!r} has no host: write HOST:PORT")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host.rstrip(".")
    if len(name) > MAX_HOST_NAME_BYTES or not all(_LABEL.match(label) for label in name.split(".")):
        raise EndpointError(f"{host!r} in {text!r} is neither an IP address nor a host name")
    return host


def _check_port(port_text: str, text: str, allow_zero: bool) -> int:
    if not port_text.isdigit():
        raise EndpointError(f"port in {text!r} is not a number")
    port = int(port_text)
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise EndpointError(f"port {port} in {text!r} is out of range {low}..65535")
    return port


def split_host_port(text: str, default_host: str | None = None, allow_zero_port: bool = True) -> Address:
    """HOST:PORT, [IPv6]:PORT (or :PORT with a default host) as (host, port); EndpointError if not."""
    text = text.strip()
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1 : close + 2] != ":":
            raise EndpointError(f"{text!r} must be [IPv6]:PORT")
        host = text[1:close]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise EndpointError(f"{host!r} in {text!r} is not an IPv6 address") from None
        return host, _check_port(text[close + 2 :], text, allow_zero_port)
    host, sep, port = text.rpartition(":")
    if not sep:
        raise EndpointError(f"address {text!r} must be HOST:PORT")
    if ":" in host:
        raise EndpointError(f"{text!r}: an IPv6 address goes in brackets, as [{host}]:{port}")
    if not host:
        if default_host is None:
            raise EndpointError(f"{text!r} has no host: write HOST:PORT")
        host = default_host
    return _check_host(host, text), _check_port(port, text, allow_zero_port)


def parse_address(text: str, default_host: str = "127.0.0.1") -> Address:
    """A node's address: HOST:PORT (or :PORT, or [v6]:PORT); port 0 means any free port."""
    return split_host_port(text, default_host=default_host, allow_zero_port=True)


def format_address(host: str, port: int) -> str:
    """The inverse of parse_address: brackets around IPv6 hosts."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_endpoint(text: str) -> str:
    """A service endpoint as advertised: HOST:PORT, [IPv6]:PORT or SCHEME:...; EndpointError if not."""
    if not text or text != text.strip():
        raise EndpointError(f"endpoint {text!r} is empty or has surrounding spaces")
    if len(text.encode("utf-8")) > MAX_VALUE_BYTES:
        raise EndpointError(f"endpoint is longer than {MAX_VALUE_BYTES} bytes")
    if text.startswith("["):
        split_host_port(text, allow_zero_port=False)
        return text
    head, sep, tail = text.rpartition(":")
    if sep and tail.isdigit() and "/" not in text and head and ":" not in head:
        split_host_port(text, allow_zero_port=False)
        return text
    if _URI.match(text) and not tail.isdigit():
        return text
    if _URI.match(text) and "//" in text:
        return text
    raise EndpointError(
        f"endpoint {text!r} must be HOST:PORT, [IPv6]:PORT or a URI with a scheme (e.g. https://host:port/path)"
    )
