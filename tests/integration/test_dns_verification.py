"""Domain verification against a real authoritative DNS server (Knot on loopback), plus dnslib
servers for SERVFAIL and a silent port for timeouts."""

from __future__ import annotations

import time

import fakes.dns_servers as fake_dns
import pytest

from runner.dns_check import DomainVerifier, normalize_domain, verify_domain, verify_many

knot, servfail_dns, blackhole_dns = fake_dns.knot, fake_dns.servfail_dns, fake_dns.blackhole_dns  # fixtures

TOKEN = "3f9a1c0de4b24c6f8a7b5e2d1c0f9a8b"
PLATFORM = "stores.platform.test"
ADDRESSES = ["192.0.2.10", "2001:db8::10"]
PLATFORM_ZONE = ["stores A 192.0.2.10", "stores AAAA 2001:db8::10"]


async def check(server: str, domain: str, token: str = TOKEN, timeout: float = 2.0):
    return await verify_domain(domain, token, nameservers=[server], platform_cname=PLATFORM,
                               platform_addresses=ADDRESSES, timeout=timeout)


def query(result, name: str, rdtype: str) -> dict:
    found = [r for r in result.records if r["name"] == name and r["type"] == rdtype]
    assert found, f"no {rdtype} query for {name} in {result.records}"
    return found[-1]


async def test_correct_txt_and_cname_verifies_and_logs_every_query(knot):
    knot.set_zone("shop.test", [f'_storeops-verification.www TXT "{TOKEN}"', f"www CNAME {PLATFORM}."])
    knot.set_zone("platform.test", PLATFORM_ZONE)
    result = await check(knot.address, "www.shop.test")
    assert result.success and result.error is None
    txt = query(result, "_storeops-verification.www.shop.test", "TXT")
    assert txt == {**txt, "answers": [TOKEN], "rcode": "NOERROR", "ttl": 60, "resolver": knot.address}
    assert txt["elapsed_ms"] >= 0
    assert query(result, "www.shop.test", "CNAME")["answers"] == [PLATFORM]
    assert result.duration_ms >= 0


async def test_wrong_txt_value_is_a_definitive_failure_showing_what_was_found(knot):
    knot.set_zone("shop.test", ['_storeops-verification.www TXT "someone-elses-token"', f"www CNAME {PLATFORM}."])
    result = await check(knot.address, "www.shop.test")
    assert not result.success and result.definitive
    assert "TXT record found at _storeops-verification.www.shop.test but its value differs" in result.error
    assert "someone-elses-token" in result.error


async def test_missing_txt_then_fixed_zone_verifies(knot):
    knot.set_zone("shop.test", [f"www CNAME {PLATFORM}."])
    missing = await check(knot.address, "www.shop.test")
    assert not missing.success and missing.definitive
    assert "NXDOMAIN for _storeops-verification.www.shop.test" in missing.error
    assert query(missing, "_storeops-verification.www.shop.test", "TXT")["rcode"] == "NXDOMAIN"

    knot.set_zone("shop.test", [f"www CNAME {PLATFORM}.", f'_storeops-verification.www TXT "{TOKEN}"'])
    assert (await check(knot.address, "www.shop.test")).success


async def test_name_without_cname_or_txt_record_says_what_to_add(knot):
    # The names exist (other record types) but hold no TXT / CNAME: NOERROR without the record.
    knot.set_zone("shop.test", ["_storeops-verification.www MX 10 mail.shop.test.", "www MX 10 mail.shop.test."])
    result = await check(knot.address, "www.shop.test")
    assert not result.success and result.definitive
    assert "no TXT record at _storeops-verification.www.shop.test" in result.error
    assert f"no CNAME record at www.shop.test: add a CNAME to {PLATFORM}" in result.error


async def test_cname_to_the_wrong_target(knot):
    knot.set_zone("shop.test", [f'_storeops-verification.www TXT "{TOKEN}"', "www CNAME old-host.chain.test."])
    knot.set_zone("chain.test", ["old-host A 203.0.113.9"])
    result = await check(knot.address, "www.shop.test")
    assert not result.success and result.definitive
    assert result.error == f"CNAME points to old-host.chain.test, expected {PLATFORM}"


async def test_cname_chain_is_followed_to_the_platform(knot):
    knot.set_zone("shop.test", [f'_storeops-verification.www TXT "{TOKEN}"', "www CNAME alias.chain.test."])
    knot.set_zone("chain.test", ["alias CNAME edge.chain.test.", f"edge CNAME {PLATFORM}."])
    knot.set_zone("platform.test", PLATFORM_ZONE)
    result = await check(knot.address, "www.shop.test")
    assert result.success, result.error
    assert query(result, "alias.chain.test", "CNAME")["answers"] == ["edge.chain.test"]

    knot.set_zone("chain.test", ["alias CNAME edge.chain.test.", "edge CNAME parked.chain.test.", "parked A 203.0.113.9"])
    broken = await check(knot.address, "www.shop.test")
    assert not broken.success and broken.definitive
    assert "www.shop.test -> alias.chain.test -> edge.chain.test -> parked.chain.test" in broken.error


async def test_split_and_multiple_txt_records(knot):
    split = [TOKEN[:10], TOKEN[10:]]
    knot.set_zone("shop.test", [
        '_storeops-verification.www TXT "v=spf1 -all"',
        f'_storeops-verification.www TXT "{split[0]}" "{split[1]}"',
        f"www CNAME {PLATFORM}.",
    ])
    result = await check(knot.address, "www.shop.test")
    assert result.success, result.error
    assert TOKEN in query(result, "_storeops-verification.www.shop.test", "TXT")["answers"]


async def test_prefixed_token_value_is_accepted(knot):
    knot.set_zone("shop.test", [f'_storeops-verification.www TXT "storeops-verification={TOKEN}"',
                                f"www CNAME {PLATFORM}."])
    assert (await check(knot.address, "www.shop.test")).success


async def test_nxdomain_for_the_domain(knot):
    result = await check(knot.address, "nosuch.shop.test")
    assert not result.success and result.definitive
    assert "NXDOMAIN for nosuch.shop.test" in result.error
    assert query(result, "nosuch.shop.test", "CNAME")["rcode"] == "NXDOMAIN"


async def test_apex_with_platform_addresses_verifies_and_a_stray_address_fails(knot):
    knot.set_zone("apex.test", [f'_storeops-verification TXT "{TOKEN}"', "@ A 192.0.2.10", "@ AAAA 2001:db8::10"])
    result = await check(knot.address, "apex.test")
    assert result.success, result.error
    assert query(result, "apex.test", "AAAA")["answers"] == ["2001:db8::10"]

    knot.set_zone("apex.test", [f'_storeops-verification TXT "{TOKEN}"', "@ A 192.0.2.10", "@ A 203.0.113.50"])
    stray = await check(knot.address, "apex.test")
    assert not stray.success and stray.definitive
    assert "apex.test points to 203.0.113.50, outside the platform addresses" in stray.error

    knot.set_zone("apex.test", [f'_storeops-verification TXT "{TOKEN}"'])
    bare = await check(knot.address, "apex.test")
    assert "no A/AAAA records at apex.test" in bare.error


async def test_idn_input_is_checked_under_its_a_label(knot):
    knot.set_zone("shop.test", [f'_storeops-verification.xn--mnchen-3ya TXT "{TOKEN}"',
                                f"xn--mnchen-3ya CNAME {PLATFORM}."])
    result = await check(knot.address, "München.Shop.TEST.")
    assert result.success, result.error
    assert query(result, "xn--mnchen-3ya.shop.test", "CNAME")["rcode"] == "NOERROR"


async def test_servfail_is_not_definitive(servfail_dns):
    result = await check(servfail_dns, "www.shop.test")
    assert not result.success and not result.definitive
    assert f"SERVFAIL from {servfail_dns}" in result.error
    assert {r["rcode"] for r in result.records} == {"SERVFAIL"}


async def test_timeout_is_not_definitive_and_bounded(blackhole_dns):
    started = time.monotonic()
    result = await check(blackhole_dns, "www.shop.test", timeout=0.4)
    assert time.monotonic() - started < 2.0
    assert not result.success and not result.definitive
    assert f"timeout at {blackhole_dns}" in result.error
    assert {r["rcode"] for r in result.records} == {"TIMEOUT"}
    assert {r["resolver"] for r in result.records} == {blackhole_dns}


async def test_garbage_input_fails_without_querying(knot):
    result = await check(knot.address, "not a domain")
    assert not result.success and result.definitive and result.records == []
    assert "contains spaces" in result.error


async def test_verify_many_keeps_order(knot):
    knot.set_zone("shop.test", [f'_storeops-verification.a TXT "{TOKEN}"', f"a CNAME {PLATFORM}.",
                                f"b CNAME {PLATFORM}."])
    results = await verify_many([("a.shop.test", TOKEN), ("b.shop.test", TOKEN), ("c.shop.test", TOKEN)] * 5,
                                nameservers=[knot.address], platform_cname=PLATFORM, platform_addresses=ADDRESSES,
                                concurrency=4)
    assert [r.success for r in results] == [True, False, False] * 5


@pytest.mark.parametrize(("raw", "expected"), [
    ("Shop.Example.COM.", "shop.example.com"),
    ("faß.de", "xn--fa-hia.de"),
    ("München.de", "xn--mnchen-3ya.de"),
    ("  www.example.in ", "www.example.in"),
])
def test_normalize_domain(raw, expected):
    assert normalize_domain(raw) == expected


@pytest.mark.parametrize(("raw", "message"), [
    ("", "empty"),
    ("shop example.com", "spaces"),
    ("localhost", "single label"),
    ("192.0.2.1", "IP address"),
    ("[2001:db8::1]", "IP address"),
    ("a" * 64 + ".com", "label is longer than 63"),
    (("a" * 60 + ".") * 5 + "com", "longer than 253"),
    ("https://shop.example.com/", "URL"),
    ("shop_1.example.com", "not a valid domain"),
    ("a..example.com", "not a valid domain"),
])
def test_normalize_domain_rejects_garbage(raw, message):
    with pytest.raises(ValueError, match=message):
        normalize_domain(raw)


async def test_without_configured_nameservers_the_authoritative_servers_are_asked(knot):
    # The bootstrap resolver stands in for the system resolver: it finds the zone (shop.test) and its
    # NS (ns.shop.test -> 127.0.0.1); the checks then go to that address directly.
    knot.set_zone("shop.test", [f'_storeops-verification.www TXT "{TOKEN}"', f"www CNAME {PLATFORM}."])
    verifier = DomainVerifier(nameservers=None, platform_cname=PLATFORM, platform_addresses=ADDRESSES,
                              timeout=2.0, bootstrap_nameservers=[knot.address], authoritative_port=knot.port)
    try:
        result = await verifier.verify("www.shop.test", TOKEN)
    finally:
        verifier.close()
    assert result.success, result.error
    ns = query(result, "shop.test", "NS")
    assert ns["answers"] == ["ns.shop.test."] and ns["authoritative_addresses"] == ["127.0.0.1"]
    assert query(result, "_storeops-verification.www.shop.test", "TXT")["resolver"] == f"127.0.0.1:{knot.port}"
