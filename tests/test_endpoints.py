"""Addresses and service endpoints are checked where they enter, with one message per mistake."""

from __future__ import annotations

import pytest

from dhtscope.node.endpoints import EndpointError, check_endpoint, format_address, parse_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:4500", ("127.0.0.1", 4500)),
        (":4500", ("127.0.0.1", 4500)),
        ("[::1]:4500", ("::1", 4500)),
        ("localhost:0", ("localhost", 0)),
        ("node-1.example.org:65535", ("node-1.example.org", 65535)),
    ],
)
def test_addresses_that_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("4500", "must be HOST:PORT"),
        ("127.0.0.1:http", "not a number"),
        ("127.0.0.1:70000", "out of range"),
        ("::1:4500", "in brackets"),
        ("[::1]4500", "[IPv6]:PORT"),
        ("[zz::1]:4500", "not an IPv6 address"),
        ("bad_host!:4500", "neither an IP address nor a host name"),
    ],
)
def test_addresses_refused_with_a_reason(text: str, fragment: str) -> None:
    with pytest.raises(EndpointError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        parse_address(text)


@pytest.mark.parametrize(
    "text",
    ["127.0.0.1:9001", "calc.example:8443", "[2001:db8::1]:443", "https://calc.example:8443/v1", "unix:/run/c.sock"],
)
def test_endpoints_accepted(text: str) -> None:
    assert check_endpoint(text) == text


@pytest.mark.parametrize("text", ["notanendpoint", "garbage", "", " 127.0.0.1:9001", "127.0.0.1:0", "host:99999"])
def test_endpoints_refused(text: str) -> None:
    with pytest.raises(EndpointError):
        check_endpoint(text)


def test_format_address_brackets_ipv6_only() -> None:
    assert format_address("::1", 4500) == "[::1]:4500"
    assert format_address("127.0.0.1", 4500) == "127.0.0.1:4500"
