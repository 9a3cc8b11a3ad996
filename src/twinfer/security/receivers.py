"""Where stream results may be sent. A stream fans its results out over UDP to receivers its client names, so
without a rule the server is a reflector: anyone could aim it (and its 50-80x byte amplification) at a third
party or a broadcast address. The rule: by default only the session's own IP address (its TCP peer) may receive;
the operator widens it with CIDR networks (`stream_receiver_networks`). A broadcast address goes only where it is
listed as a single address of its own, never as a mere member of a wider network (`10.0.0.0/8` does not allow
`10.255.255.255`, nor `0.0.0.0/0` allow `255.255.255.255`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from twinfer.errors import PermissionDenied

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def _plain(address: IPAddress) -> IPAddress:
    """`::ffff:10.0.0.1` (an IPv4 peer on a dual-stack socket) is 10.0.0.1."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ReceiverPolicy:
    """Checks one receiver address against the session's own address and the listed networks."""

    def __init__(self, networks: Iterable[str] = ()) -> None:
        parsed: list[IPNetwork] = []
        for spec in networks:
            try:
                parsed.append(ipaddress.ip_network(spec.strip(), strict=False))
            except ValueError:
                raise ValueError(f"stream_receiver_networks: {spec!r} is not a CIDR network (e.g. 10.0.0.0/8)") \
                    from None
        self.networks = tuple(parsed)
        self._single = {n.network_address for n in parsed if n.num_addresses == 1}
        # the directed broadcast address of every listed IPv4 network that has one
        self._broadcasts = {n.broadcast_address for n in parsed
                            if isinstance(n, ipaddress.IPv4Network) and n.prefixlen <= 30} | {LIMITED_BROADCAST}

    @property
    def broadcast_listed(self) -> bool:
        """Whether the UDP socket needs SO_BROADCAST: only a single listed IPv4 address can be a broadcast one
        (without the option, the kernel refuses any broadcast the rule above did not foresee)."""
        return any(isinstance(a, ipaddress.IPv4Address) for a in self._single)

    def is_broadcast(self, address: IPAddress) -> bool:
        return address in self._broadcasts

    def check(self, host: str, session_host: str) -> None:
        """Raise PermissionDenied unless results may go to `host` for a session connected from `session_host`."""
        try:
            address = _plain(ipaddress.ip_address(host))
        except ValueError:
            raise PermissionDenied(f"receiver {host!r} is not an IP address") from None
        if address in self._single:
            return
        if self.is_broadcast(address) or address.is_unspecified:
            raise PermissionDenied(f"receiver {host} is a broadcast address; it must be listed on its own in "
                                   "stream_receiver_networks")
        try:
            own = _plain(ipaddress.ip_address(session_host)) if session_host else None
        except ValueError:
            own = None
        if address == own or any(address in network for network in self.networks):
            return
        raise PermissionDenied(f"receiver {host} is neither this session's address ({session_host or 'unknown'}) "
                               "nor in stream_receiver_networks")
