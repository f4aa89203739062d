"""The outbound HTTP of remote hooks: schema fetches and tool calls over one aiohttp session, behind the
SSRF guard.

The guard refuses link-local addresses (169.254.0.0/16, fe80::/10) and cloud metadata services
(169.254.169.254, fd00:ec2::254, 100.100.100.200, metadata.google.internal …) unless the operator allows
them (``CHAINLOOM_HOOKS_ALLOW_PRIVATE_LINKS=true``); loopback and private ranges are allowed (on-prem
hooks, tests). It is applied where the connection is made: the connector filters the addresses a host
resolves to (an IP literal too, and the target of every redirect) and connects only to those it let
through, so a name that resolves to a harmless address when checked and to a metadata address a moment
later (DNS rebinding) cannot slip past. Proxies from the environment are not used (the guard would see
the proxy, not the hook).

    http = HookHttp(allow_private_links=False, connect_timeout=5.0)
    status, content_type, body = await http.request("GET", url, {})   # bounded by the caller's deadline
    await http.close()
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp.abc import ResolveResult

# Connections kept open at once across every hook; seconds an idle one is kept for reuse.
_CONNECTIONS = 256
_KEEPALIVE = 4.0
# The largest answer read from a hook (a schema or a tool's answer).
MAX_ANSWER_BYTES = 16 * 1024 * 1024

_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle …
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
    )
)
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog"})


class AddressRefused(Exception):
    """The SSRF guard refused every address of a host."""


def refused_address(address: str) -> bool:
    """Whether the guard refuses this IP address (link-local or a metadata service)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip in METADATA_ADDRESSES or any(ip in network for network in _LINK_LOCAL)


def refused_host(host: str) -> bool:
    return host.rstrip(".").lower() in METADATA_HOSTS


class GuardedConnector(aiohttp.TCPConnector):
    """A connector that connects only to addresses the guard allows (checked after resolution)."""

    async def _resolve_host(self, host: str, port: int, traces: Sequence[Any] | None = None) -> list[ResolveResult]:
        if refused_host(host):
            raise AddressRefused(f"address of {host} refused: cloud metadata service")
        results = await super()._resolve_host(host, port, traces=traces)
        allowed = [result for result in results if not refused_address(result["host"])]
        if not allowed:
            addresses = ", ".join(sorted({result["host"] for result in results}))
            raise AddressRefused(f"address of {host} refused ({addresses}): link-local or cloud metadata")
        return allowed


class HookHttp:
    """The process's HTTP client of hooks (one session, made at the first call; ``close()`` at the end)."""

    def __init__(self, allow_private_links: bool = False, connect_timeout: float = 5.0) -> None:
        self._guarded = not allow_private_links
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        kind = GuardedConnector if self._guarded else aiohttp.TCPConnector
        connector = kind(limit=_CONNECTIONS, limit_per_host=0, keepalive_timeout=_KEEPALIVE, ttl_dns_cache=10)
        self._session = aiohttp.ClientSession(connector=connector, trust_env=False, timeout=self._timeout)
        return self._session

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> tuple[int, str, bytes]:
        """(status, content type, body). Raises ``AddressRefused``, ``aiohttp.ClientError``, ``ValueError``
        (an invalid URL, an answer over ``MAX_ANSWER_BYTES``); no deadline of its own but the connect
        timeout: the caller bounds the call (the hook's ``timeoutMs``)."""
        session = self._session or self._open()
        async with session.request(method, url, headers=dict(headers), data=body) as response:
            if response.content_length is not None and response.content_length > MAX_ANSWER_BYTES:
                raise ValueError(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
            data = bytearray()
            async for chunk in response.content.iter_chunked(1 << 16):
                data += chunk
                if len(data) > MAX_ANSWER_BYTES:
                    raise ValueError(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
            return response.status, response.headers.get("Content-Type", ""), bytes(data)

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
