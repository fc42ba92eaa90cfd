"""DNS verification of custom domains with dnspython's asyncio resolver. Pure I/O: returns values,
never touches the database (runner.domains records the results through SQL).

A domain passes when both hold:
- ownership: a TXT record at `<txt_prefix>.<domain>` whose value (character-strings joined) is the
  domain's token, or `<anything>=<token>`; other TXT records at the name are ignored;
- routing: a CNAME chain from the domain reaching the platform target (subdomains), or, without a
  CNAME, A/AAAA records that all fall inside the platform's address set (apex, or a flattened
  CNAME/ALIAS anywhere).

Every query is logged (name, type, answers, rcode, ttl, resolver, elapsed_ms) so a failed attempt
shows what was seen. Failures are *definitive* when DNS answered (NXDOMAIN, no such record, wrong
value) and not definitive when it could not be asked (timeout, SERVFAIL, network error): only
definitive failures may demote a verified domain.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
import struct
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdatatype
import dns.resolver
import idna

MAX_CNAME_HOPS = 8
DEFAULT_TXT_PREFIX = "_storeops-verification"


@dataclass(frozen=True, slots=True)
class VerificationResult:
    success: bool
    definitive: bool
    error: str | None
    records: list[dict[str, Any]]
    duration_ms: int


def normalize_domain(raw: str) -> str:
    """The domain as stored and compared: IDNA 2008 / UTS-46 A-label, lowercase, no trailing dot.

    Raises ValueError with a one-line reason for anything that is not a registrable host name.
    """
    if not isinstance(raw, str):
        raise ValueError(f"domain must be text, got {type(raw).__name__}")
    text = unicodedata.normalize("NFC", raw.strip())
    if not text:
        raise ValueError("domain is empty: enter a domain name such as shop.example.com")
    if "://" in text or "/" in text:
        raise ValueError(f"{raw!r} looks like a URL: enter only the domain name, e.g. shop.example.com")
    if any(ch.isspace() for ch in text):
        raise ValueError(f"{raw!r} contains spaces: a domain name cannot")
    text = text.rstrip(".").rstrip("\u3002\uff0e\uff61")
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        pass
    else:
        raise ValueError(f"{raw!r} is an IP address: enter a domain name that points to the platform")
    try:
        alabel = idna.encode(text, uts46=True, std3_rules=True).decode("ascii").lower()
    except idna.IDNAError as exc:
        reason = str(exc)
        if reason == "Domain too long":
            reason = "longer than 253 characters"
        elif reason == "Label too long":
            reason = "a label is longer than 63 characters"
        raise ValueError(f"{_clip(raw, 70)!r} is not a valid domain name: {reason}") from None
    labels = alabel.split(".")
    if len(labels) < 2:
        raise ValueError(f"{raw!r} has a single label: enter a full domain name such as shop.example.com")
    if any(len(label) > 63 for label in labels):
        raise ValueError(f"{_clip(raw, 70)!r} is not a valid domain name: a label is longer than 63 characters")
    if len(alabel) > 253:
        raise ValueError(f"{_clip(raw, 70)!r} is not a valid domain name: longer than 253 characters")
    if labels[-1].isdigit():
        raise ValueError(f"{raw!r} ends in a numeric label: not a domain name")
    return alabel


def parse_nameserver(spec: str) -> tuple[str, int]:
    """'ip', 'ip:port' or '[v6]:port' -> (ip, port)."""
    spec = spec.strip()
    host, port = spec, 53
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif spec.count(":") == 1:
        host, _, p = spec.partition(":")
        port = int(p)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"nameserver {spec!r} must be an IP address with an optional :port") from None
    if not 0 < port < 65536:
        raise ValueError(f"nameserver {spec!r} has an invalid port")
    return host, port


def _label(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _UdpPool(asyncio.DatagramProtocol):
    """One connected UDP socket of a PooledDo53Nameserver; replies are matched to waiting queries
    by message id."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[int, asyncio.Future[bytes]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Hundreds of replies can arrive while the loop is busy parsing: don't let the kernel drop them.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) < 12:
            return
        future = self.waiting.get(int.from_bytes(data[:2], "big"))
        if future is not None and not future.done():
            future.set_result(data)

    def error_received(self, exc: Exception) -> None:
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.error_received(exc or ConnectionResetError("DNS socket closed"))


def _query_wire(request: dns.message.Message) -> bytes:
    """A plain one-question query's wire form without dnspython's compressing renderer (the
    costliest step of sending); anything fancier (EDNS, TSIG) goes through Message.to_wire."""
    if request.edns >= 0 or request.keyring or len(request.question) != 1:
        return request.to_wire()
    rrset = request.question[0]
    labels = rrset.name.labels
    qname = b"".join(len(label).to_bytes(1, "big") + label for label in labels)
    if not labels or labels[-1] != b"":
        return request.to_wire()
    return struct.pack("!HHHHHH", request.id, request.flags, 1, 0, 0, 0) + qname + \
        struct.pack("!HH", rrset.rdtype, rrset.rdclass)


class PooledDo53Nameserver(dns.nameserver.Do53Nameserver):
    """A Do53 nameserver for dnspython's async Resolver that reuses a few UDP sockets instead of
    opening one per query (sweeps of 100,000 domains). Each query goes out on a random socket of
    the pool (random source port) with a message id unused on that socket, and a reply must match
    the question (Message.is_response), so a spoofer still has to guess port and id. TCP (after a
    truncated reply) goes through dnspython as usual."""

    def __init__(self, address: str, port: int = 53, sockets: int = 16) -> None:
        super().__init__(address, port)
        self._size = max(1, sockets)
        self._pools: list[_UdpPool] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening: asyncio.Lock | None = None

    async def _pool(self) -> _UdpPool:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._pools, self._loop, self._opening = [], loop, asyncio.Lock()
        # Grow the pool only under load: a one-off verification uses one socket, a sweep up to _size.
        if len(self._pools) < self._size and all(len(p.waiting) >= 8 for p in self._pools):
            assert self._opening is not None
            async with self._opening:
                if len(self._pools) < self._size and all(len(p.waiting) >= 8 for p in self._pools):
                    family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
                    _, protocol = await loop.create_datagram_endpoint(
                        _UdpPool, remote_addr=(self.address, self.port), family=family)
                    self._pools.append(protocol)
        return random.choice(self._pools)

    async def async_query(self, request: dns.message.QueryMessage, timeout: float, source: str | None,
                          source_port: int, max_size: bool, backend: Any, one_rr_per_rrset: bool = False,
                          ignore_trailing: bool = False) -> dns.message.Message:
        if max_size or source:
            return await super().async_query(request, timeout, source, source_port, max_size, backend,
                                             one_rr_per_rrset, ignore_trailing)
        pool = await self._pool()
        while request.id in pool.waiting:
            request.id = random.getrandbits(16)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        pool.waiting[request.id] = future
        try:
            assert pool.transport is not None
            pool.transport.sendto(_query_wire(request))
            deadline = time.monotonic() + timeout
            while True:
                try:
                    wire = await asyncio.wait_for(future, max(deadline - time.monotonic(), 0))
                except TimeoutError:
                    raise dns.exception.Timeout(timeout=timeout) from None
                response = dns.message.from_wire(wire, one_rr_per_rrset=one_rr_per_rrset,
                                                 ignore_trailing=ignore_trailing, raise_on_truncation=True)
                if request.is_response(response):
                    return response
                # A stray datagram with a reused id: keep waiting for the real reply.
                future = asyncio.get_running_loop().create_future()
                pool.waiting[request.id] = future
        finally:
            pool.waiting.pop(request.id, None)

    def close(self) -> None:
        for pool in self._pools:
            if pool.transport is not None:
                pool.transport.close()
        self._pools = []


def make_resolver(nameservers: Sequence[tuple[str, int]], timeout: float,
                  pooled: bool = True) -> dns.asyncresolver.Resolver:
    """A non-caching resolver asking exactly these servers. Each try gets a share of `timeout` so a
    lost UDP packet is retried within the total."""
    resolver = dns.asyncresolver.Resolver(configure=False)
    kind = PooledDo53Nameserver if pooled else dns.nameserver.Do53Nameserver
    resolver.nameservers = [kind(host, port) for host, port in nameservers]
    resolver.lifetime = timeout
    resolver.timeout = max(timeout / 2.5, 0.05)
    resolver.retry_servfail = False
    resolver.cache = None
    return resolver


@dataclass(slots=True)
class _Seen:
    """One query's outcome: the logged dict plus what the checks need."""

    log: dict[str, Any]
    rcode: str
    values: list[str] = field(default_factory=list)
    zone: str | None = None  # the SOA owner in a negative answer: the zone the name lives in

    @property
    def transient(self) -> bool:
        return self.rcode not in ("NOERROR", "NXDOMAIN")


def _txt_value(rdata: Any) -> str:
    return b"".join(rdata.strings).decode("utf-8", "replace")


class DomainVerifier:
    """Holds the resolver(s) and platform targets; share one across many verifications."""

    def __init__(self, *, nameservers: Sequence[str] | None, platform_cname: str,
                 platform_addresses: Iterable[str], txt_prefix: str = DEFAULT_TXT_PREFIX,
                 timeout: float = 5.0, bootstrap_nameservers: Sequence[str] | None = None,
                 authoritative_port: int = 53) -> None:
        """`nameservers` ("ip:port"): ask exactly these. None or empty: find the domain's zone and its
        authoritative servers through the system resolver (or `bootstrap_nameservers`) and ask those
        on `authoritative_port`."""
        self.timeout = float(timeout)
        self.authoritative_port = authoritative_port
        self._bootstrap = [parse_nameserver(s) for s in (bootstrap_nameservers or []) if s.strip()]
        self.txt_prefix = txt_prefix.strip(".")
        self.platform_cname = platform_cname.strip().rstrip(".").lower()
        self.platform_addresses = frozenset(str(ipaddress.ip_address(a.strip())) for a in platform_addresses if a.strip())
        servers = [parse_nameserver(s) for s in (nameservers or []) if s.strip()]
        self._fixed = make_resolver(servers, self.timeout) if servers else None
        self._authoritative: dict[str, dns.asyncresolver.Resolver] = {}
        self._system: dns.asyncresolver.Resolver | None = None

    def close(self) -> None:
        """Close the pooled UDP sockets (they are reopened if the verifier is used again)."""
        resolvers = [self._fixed, *self._authoritative.values()]
        for resolver in resolvers:
            for ns in resolver.nameservers if resolver is not None else []:
                if isinstance(ns, PooledDo53Nameserver):
                    ns.close()

    # -- resolvers ---------------------------------------------------------------------------

    def _system_resolver(self) -> dns.asyncresolver.Resolver:
        if self._system is None:
            if self._bootstrap:
                self._system = make_resolver(self._bootstrap, self.timeout, pooled=False)
            else:
                self._system = dns.asyncresolver.Resolver()
                self._system.lifetime = self.timeout
                self._system.timeout = max(self.timeout / 2.5, 0.05)
        return self._system

    async def _resolver_for(self, domain: str, records: list[dict[str, Any]]) -> dns.asyncresolver.Resolver:
        """The configured servers, else the domain's authoritative servers (found via the system
        resolver: zone_for_name -> NS -> addresses)."""
        if self._fixed is not None:
            return self._fixed
        started = time.perf_counter()
        system = self._system_resolver()
        zone = await dns.asyncresolver.zone_for_name(domain, resolver=system, lifetime=self.timeout)
        key = zone.to_text(omit_final_dot=True).lower()
        cached = self._authoritative.get(key)
        if cached is not None:
            return cached
        ns_answer = await system.resolve(zone, "NS")
        addresses: list[tuple[str, int]] = []
        for ns in ns_answer:
            for rdtype in ("A", "AAAA"):
                try:
                    found = await system.resolve(ns.target, rdtype)
                except dns.exception.DNSException:
                    continue
                addresses += [(r.address, self.authoritative_port) for r in found]
        records.append({"name": key, "type": "NS", "answers": [ns.target.to_text() for ns in ns_answer],
                        "rcode": "NOERROR", "ttl": ns_answer.rrset.ttl if ns_answer.rrset else None,
                        "resolver": "system", "elapsed_ms": round((time.perf_counter() - started) * 1000, 2),
                        "authoritative_addresses": [a for a, _ in addresses]})
        if not addresses:
            raise dns.resolver.NoNameservers(request=None, errors=[])
        resolver = make_resolver(addresses, self.timeout)
        self._authoritative[key] = resolver
        return resolver

    # -- one query ---------------------------------------------------------------------------

    async def _query(self, resolver: dns.asyncresolver.Resolver, name: str, rdtype: str,
                     records: list[dict[str, Any]]) -> _Seen:
        started = time.perf_counter()
        first = resolver.nameservers[0] if resolver.nameservers else None
        server = _label(first.answer_nameserver(), first.answer_port()) \
            if isinstance(first, dns.nameserver.Nameserver) else str(first or "system")
        answers: list[str] = []
        values: list[str] = []
        ttl: int | None = None
        zone: str | None = None
        try:
            answer = await resolver.resolve(name, rdtype, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN as exc:
            rcode = "NXDOMAIN"
            response = exc.kwargs.get("responses", {}).get(dns.name.from_text(name))
            zone = _negative_zone(response)
        except dns.resolver.LifetimeTimeout as exc:
            rcode = "TIMEOUT"
            server = _last_server(exc, server)
        except dns.resolver.NoNameservers as exc:
            errors = exc.kwargs.get("errors") or []
            last = errors[-1] if errors else None
            rcode = last[3] if last and isinstance(last[3], str) else "ERROR"
            server = _last_server(exc, server)
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            rcode = "ERROR"
            answers = [f"{type(exc).__name__}: {exc}"]
        else:
            rcode = "NOERROR"
            if answer.nameserver is not None:
                server = _label(answer.nameserver, answer.port)
            rrset = answer.rrset
            if rrset is not None:
                ttl = rrset.ttl
                if rdtype == "TXT":
                    values = [_txt_value(r) for r in rrset]
                    answers = values
                elif rdtype == "CNAME":
                    values = [r.target.to_text(omit_final_dot=True).lower() for r in rrset]
                    answers = values
                elif rdtype in ("A", "AAAA"):
                    values = [str(ipaddress.ip_address(r.address)) for r in rrset]
                    answers = values
                else:
                    answers = [r.to_text() for r in rrset]
                if answer.canonical_name != answer.qname:
                    answers = answers + [f"(via CNAME {answer.canonical_name.to_text(omit_final_dot=True)})"]
            else:
                zone = _negative_zone(answer.response)
        log = {"name": name, "type": rdtype, "answers": answers, "rcode": rcode, "ttl": ttl,
               "resolver": server, "elapsed_ms": round((time.perf_counter() - started) * 1000, 2)}
        records.append(log)
        return _Seen(log, rcode, values, zone)

    # -- the checks --------------------------------------------------------------------------

    async def verify(self, domain: str, token: str) -> VerificationResult:
        started = time.perf_counter()
        records: list[dict[str, Any]] = []
        problems: list[tuple[str, bool]] = []  # (message, definitive)
        try:
            name = normalize_domain(domain)
        except ValueError as exc:
            return VerificationResult(False, True, str(exc), records, 0)
        try:
            resolver = await self._resolver_for(name, records)
        except (dns.exception.DNSException, OSError) as exc:
            definitive = isinstance(exc, dns.resolver.NXDOMAIN)
            msg = f"NXDOMAIN for {name}" if definitive else f"could not find the authoritative nameservers for {name}: {exc}"
            return VerificationResult(False, definitive, msg, records, _ms(started))

        txt_name = f"{self.txt_prefix}.{name}"
        txt, cname = await asyncio.gather(
            self._query(resolver, txt_name, "TXT", records),
            self._query(resolver, name, "CNAME", records),
        )
        problems += self._check_txt(txt, txt_name, token)
        problems += await self._check_routing(resolver, name, cname, records)
        if not problems:
            return VerificationResult(True, True, None, records, _ms(started))
        return VerificationResult(False, any(definitive for _, definitive in problems),
                                  "; ".join(msg for msg, _ in problems), records, _ms(started))

    def _check_txt(self, seen: _Seen, txt_name: str, token: str) -> list[tuple[str, bool]]:
        if seen.transient:
            return [(_transient_message(seen, txt_name, "TXT"), False)]
        if seen.rcode == "NXDOMAIN":
            return [(f"NXDOMAIN for {txt_name}: add a TXT record there with value {token}", True)]
        if not seen.values:
            return [(f"no TXT record at {txt_name}: add one with value {token}", True)]
        token = token.strip()
        if not token:
            return [("this domain has no verification token to look for", True)]
        if any(v.strip() == token or v.strip().endswith("=" + token) for v in seen.values):
            return []
        found = ", ".join(repr(_clip(v)) for v in seen.values[:3])
        return [(f"TXT record found at {txt_name} but its value differs (found {found}, expected {token!r})", True)]

    def _is_platform(self, target: str) -> bool:
        return target == self.platform_cname or target.endswith("." + self.platform_cname)

    async def _check_routing(self, resolver: dns.asyncresolver.Resolver, name: str, cname: _Seen,
                             records: list[dict[str, Any]]) -> list[tuple[str, bool]]:
        if cname.transient:
            return [(_transient_message(cname, name, "CNAME"), False)]
        if cname.rcode == "NXDOMAIN":
            return [(f"NXDOMAIN for {name}", True)]
        if cname.values:
            return await self._follow_chain(resolver, name, cname.values[0], records)
        return await self._check_addresses(resolver, name, cname.zone, records)

    async def _follow_chain(self, resolver: dns.asyncresolver.Resolver, name: str, target: str,
                            records: list[dict[str, Any]]) -> list[tuple[str, bool]]:
        chain = [name, target]
        # At authoritative servers an out-of-zone target is not followed: use the system resolver.
        follow = resolver if self._fixed is not None else self._system_resolver()
        while not self._is_platform(chain[-1]) and len(chain) <= MAX_CNAME_HOPS:
            seen = await self._query(follow, chain[-1], "CNAME", records)
            if seen.transient:
                return [(_transient_message(seen, chain[-1], "CNAME"), False)]
            if not seen.values or seen.values[0] in chain:
                break
            chain.append(seen.values[0])
        if self._is_platform(chain[-1]):
            return []
        if len(chain) == 2:
            return [(f"CNAME points to {chain[1]}, expected {self.platform_cname}", True)]
        return [(f"CNAME chain {' -> '.join(chain)} does not reach {self.platform_cname}", True)]

    async def _check_addresses(self, resolver: dns.asyncresolver.Resolver, name: str, zone: str | None,
                               records: list[dict[str, Any]]) -> list[tuple[str, bool]]:
        apex = zone is not None and zone.rstrip(".").lower() == name
        a, aaaa = await asyncio.gather(self._query(resolver, name, "A", records),
                                       self._query(resolver, name, "AAAA", records))
        for seen, rdtype in ((a, "A"), (aaaa, "AAAA")):
            if seen.transient:
                return [(_transient_message(seen, name, rdtype), False)]
        addresses = a.values + aaaa.values
        targets = ", ".join(sorted(self.platform_addresses)) or "the platform addresses"
        if not addresses:
            if apex:
                return [(f"no A/AAAA records at {name}: point them to {targets}", True)]
            return [(f"no CNAME record at {name}: add a CNAME to {self.platform_cname}", True)]
        outside = [addr for addr in addresses if addr not in self.platform_addresses]
        if not outside:
            return []
        if not apex and not self.platform_addresses:
            return [(f"{name} has A/AAAA records but no CNAME: add a CNAME to {self.platform_cname}", True)]
        return [(f"{name} points to {', '.join(outside)}, outside the platform addresses ({targets})"
                 + ("" if apex else f"; or use a CNAME to {self.platform_cname}"), True)]


def _negative_zone(response: Any) -> str | None:
    if response is None:
        return None
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            return rrset.name.to_text(omit_final_dot=True).lower()
    return None


def _last_server(exc: dns.exception.DNSException, default: str) -> str:
    errors = exc.kwargs.get("errors") or []
    if errors:
        described, port = str(errors[-1][0]), int(errors[-1][2])
        # str(Do53Nameserver) is "Do53:<address>@<port>".
        host = described.split(":", 1)[1].rsplit("@", 1)[0] if described.startswith("Do53:") else described
        return _label(host, port)
    return default


def _transient_message(seen: _Seen, name: str, rdtype: str) -> str:
    server = seen.log["resolver"]
    if seen.rcode == "TIMEOUT":
        return f"timeout at {server} asking for {rdtype} {name}"
    if seen.rcode == "ERROR":
        detail = seen.log["answers"][0] if seen.log["answers"] else "network error"
        return f"could not ask {server} for {rdtype} {name}: {detail}"
    return f"{seen.rcode} from {server} for {rdtype} {name}"


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


async def verify_domain(domain: str, token: str, *, nameservers: list[str] | None, platform_cname: str,
                        platform_addresses: list[str], txt_prefix: str = DEFAULT_TXT_PREFIX,
                        timeout: float = 5.0) -> VerificationResult:
    """Verify one domain's ownership TXT and routing; see the module docstring."""
    verifier = DomainVerifier(nameservers=nameservers, platform_cname=platform_cname,
                              platform_addresses=platform_addresses, txt_prefix=txt_prefix, timeout=timeout)
    try:
        return await verifier.verify(domain, token)
    finally:
        verifier.close()


async def verify_many(items: Iterable[tuple[str, str]], *, nameservers: list[str] | None = None,
                      platform_cname: str = "", platform_addresses: Sequence[str] = (),
                      txt_prefix: str = DEFAULT_TXT_PREFIX, timeout: float = 5.0, concurrency: int = 256,
                      verifier: DomainVerifier | None = None) -> list[VerificationResult]:
    """Verify many (domain, token) pairs with one shared resolver and at most `concurrency` in
    flight; results come back in input order."""
    owned = verifier is None
    verifier = verifier or DomainVerifier(nameservers=nameservers, platform_cname=platform_cname,
                                          platform_addresses=platform_addresses, txt_prefix=txt_prefix,
                                          timeout=timeout)
    pending = list(items)
    results: list[VerificationResult | None] = [None] * len(pending)
    position = 0

    async def worker() -> None:
        nonlocal position
        while position < len(pending):
            index = position
            position += 1
            domain, token = pending[index]
            results[index] = await verifier.verify(domain, token)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(pending))))))
    finally:
        if owned:
            verifier.close()
    return [r for r in results if r is not None]
