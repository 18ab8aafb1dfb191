"""The test process's own set-up (tests/conftest.py), where it changes how a library behaves."""

from __future__ import annotations

import ssl

import httpx


def _context(client: httpx.Client) -> ssl.SSLContext:
    return _pool_context(client._transport)


def _pool_context(transport: object) -> ssl.SSLContext:
    context: ssl.SSLContext = transport._pool._ssl_context  # type: ignore[attr-defined]
    return context


def test_default_clients_share_one_ssl_context_and_a_given_one_is_kept() -> None:
    """Clients made with httpx's default verification share one context (an httpx upgrade
    that renames what conftest replaces makes this fail, not the suite quietly slower); a
    client given its own context gets exactly that one."""
    own = ssl.create_default_context()
    with httpx.Client() as one, httpx.Client() as two, httpx.Client(verify=own) as given:
        shared = _context(one)
        assert _context(two) is shared
        assert _pool_context(httpx.AsyncHTTPTransport()) is shared  # the bridge's own kind
        assert _context(given) is own
    assert shared.verify_mode == ssl.CERT_REQUIRED
    assert shared.check_hostname
