"""Which network an address belongs to, so one host or one network cannot take over a table or a key.

Node ids and record publishers cost nothing to mint, addresses do: libp2p's kad-dht and
S/Kademlia bound what one address and one subnet may hold. The rules, shared by the routing
table and the record store:

- a public (globally routable) address counts for itself and for its subnet: /24 for IPv4,
  /48 for IPv6, the block one operator usually holds;
- a private, link-local or carrier-grade NAT address counts for itself only: one LAN or
  container network holds many honest nodes in a single /24;
- loopback is exempt: every node of a local cluster shares 127.0.0.1, and a peer that sends
  from loopback already runs on this machine.

Sans-I/O and pure: nothing here reads a socket or a clock.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

from .constants import (
    MAX_CONTACTS_PER_ADDRESS_PER_BUCKET,
    MAX_CONTACTS_PER_ADDRESS_PER_TABLE,
    MAX_CONTACTS_PER_SUBNET_PER_BUCKET,
    MAX_CONTACTS_PER_SUBNET_PER_TABLE,
    SUBNET_V4_PREFIX_BITS,
    SUBNET_V6_PREFIX_BITS,
)

# The group of records this node stores for itself (its own advertisements): never capped.
LOCAL = "local"


@dataclass(frozen=True, slots=True)
class NetworkGroup:
    """Where an address counts: `address` (None if exempt) and `subnet` (None unless public)."""

    address: str | None
    subnet: str | None
    # Always set: the group fair eviction ranks by (the subnet if public, else the address).
    rank: str


@dataclass(frozen=True, slots=True)
class AddressLimits:
    """How many routing-table contacts one address and one subnet may hold, per bucket and in all."""

    per_address_per_bucket: int = MAX_CONTACTS_PER_ADDRESS_PER_BUCKET
    per_address_per_table: int = MAX_CONTACTS_PER_ADDRESS_PER_TABLE
    per_subnet_per_bucket: int = MAX_CONTACTS_PER_SUBNET_PER_BUCKET
    per_subnet_per_table: int = MAX_CONTACTS_PER_SUBNET_PER_TABLE
    exempt_loopback: bool = True  # False only where a test puts "remote" peers on 127.0.0.1

    def __post_init__(self) -> None:
        if (
            min(
                self.per_address_per_bucket,
                self.per_address_per_table,
                self.per_subnet_per_bucket,
                self.per_subnet_per_table,
            )
            < 1
        ):
            raise ValueError("address limits must be at least 1")

    def group(self, host: str) -> NetworkGroup:
        return network_group(host, self.exempt_loopback)


@lru_cache(maxsize=65536)
def network_group(host: str, exempt_loopback: bool = True) -> NetworkGroup:
    """The groups `host` counts in; a host name (not an IP address) counts for itself only."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return NetworkGroup(host, None, host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    text = str(ip)
    if ip.is_loopback:
        return NetworkGroup(None if exempt_loopback else text, None, text)
    if not ip.is_global:
        return NetworkGroup(text, None, text)
    bits = SUBNET_V4_PREFIX_BITS if ip.version == 4 else SUBNET_V6_PREFIX_BITS
    subnet = str(ipaddress.ip_network(f"{text}/{bits}", strict=False))
    return NetworkGroup(text, subnet, subnet)


def cap_group(host: str | None) -> tuple[str, str | None]:
    """For a record's origin: (the group it ranks in, the group its per-key cap counts in or None)."""
    if host is None:
        return LOCAL, None
    group = network_group(host)
    return group.rank, (None if group.address is None else group.rank)
