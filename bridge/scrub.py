"""Text from outside made fit to show: the one scrubber for labels, annotations, logs and
the exception text that reaches Alertmanager or an operator.

``scrub`` is for text a Sentry user controls (titles, messages, tags, environment and
project names, exception text): cut to a bounded length first, control characters out,
credentials, emails and IP addresses replaced. ``redact`` takes out credentials only, for
the operator's own text (an Alertmanager's address, a config path), where an address is
what a human needs to read. ``clean`` is for configuration: controls out, capped.
"""

from __future__ import annotations

import functools
import ipaddress
import re

LIMIT = 4096  # the default cap: one annotation value

# Text is cut to ``limit + _MARGIN`` before anything else looks at it, so an address
# straddling the final cap (an email is at most 254 characters, RFC 5321 4.5.3.1.3; an
# IPv6 address with a zone well under that) is still seen whole and replaced.
_MARGIN = 256

# Control characters: C0, DEL, C1, and every format, surrogate and separator code point
# (Unicode categories Cc, Cf, Cs, Zl, Zp as of Unicode 14: soft hyphen, zero-width
# characters, bidi embeddings, overrides and isolates U+202A-202E / U+2066-2069, BOM,
# tags...). A lone surrogate is not UTF-8 and Alertmanager refuses a label value that is
# not valid UTF-8 (prometheus/common ``LabelValue.IsValid``). Line breaks and tabs become
# one space; the rest go.
_BREAKS = re.compile("[\t\n\x0b\x0c\r\x1c-\x1f\x85\u2028\u2029]+")
_CONTROLS = re.compile(
    "[\x00-\x1f\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2"
    "\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ud800-\udfff\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U00013438\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]+"
)

# PII in user text (an email in an exception message, a client IP). Each pattern is
# linear in its input: a match may only start where a run of its characters starts
# (the lookbehind), and the runs are possessive, so no start position rescans the text
# after it; the domain gives back whole labels only, once each. (The old ``[...]+@``
# retried every position of a long run: quadratic.)
_LOCAL = r"[\w.%+-]"  # the local part as used in practice (not all of RFC 5322's atext)
# Not right after a replacement either, so scrubbing scrubbed text changes nothing.
_NOT_AFTER_REPLACEMENT = r"(?<!\[ip\])(?<!\[email\])"
_EMAIL = re.compile(
    rf"(?<!{_LOCAL}){_NOT_AFTER_REPLACEMENT}{_LOCAL}++@(?:[\w-]++\.)+[^\W\d_]{{2,}}+"
)
_IPV4 = re.compile(r"(?<![0-9])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![0-9])")
# Candidates for IPv6 in every form (``2001:db8::1``, ``::1``, ``fe80::1%eth0``,
# ``::ffff:192.0.2.1``): a run of hex digits, colons and dots holding two colons, with
# an optional zone; ``ipaddress`` decides.
_IPV6 = re.compile(
    rf"(?<![0-9A-Fa-f:.]){_NOT_AFTER_REPLACEMENT}(?=[0-9A-Fa-f.]*+:[0-9A-Fa-f.]*+:)[0-9A-Fa-f:.]++(?:%[\w.~-]++)?"
)


# Credentials in text: an exception message Sentry reports, or an HTTP client's error,
# that quotes a DSN or the URL it failed on. Taken out: the userinfo of a URL (RFC 3986
# 3.2.1 ``user:password@``; a Sentry DSN's key sits there), the value of a parameter
# named like a secret (``?token=``, ``password: ...``, ``"api_key": "..."``, an
# ``Authorization`` header with its scheme), a bearer token (RFC 6750 2.1) and Sentry's
# own token formats (``sntrys_``, ``sntryu_``). Each pattern starts only where a run of
# its characters starts (the lookbehinds) and a URL's userinfo ends at its authority's
# ``/``: linear in the text. The replacement is never matched again (the lookaheads).
HIDDEN = "[secret]"  # what a credential is replaced with
_NOT_REPLACED = r"(?!\[secret\])"
_USERINFO = re.compile(rf"(?i)(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*+://){_NOT_REPLACED}[^\s/?#]*@")
_CREDENTIAL_NAMES = (
    r"(?:[a-z0-9]++[_-])*"  # a prefix: ``client_secret``, ``x-api-key``, ``sentry_key``
    r"(?:token|secret|password|passwd|pwd|apikey|signature|sig|auth|authorization|"
    r"credentials?|dsn|cookie|(?<=[_-])key)"  # ``key`` alone is too common a word
)
_PARAM = re.compile(
    rf"(?i)(?<![a-z0-9_-])({_CREDENTIAL_NAMES}[\"']?\s*+[=:]\s*+[\"']?)"
    rf"{_NOT_REPLACED}(?:(?:basic|bearer|digest|token)\s++)?[^\s&;,\"'<>()\[\]{{}}]++"
)
_BEARER = re.compile(rf"(?i)(?<![a-z0-9_-])(bearer\s++){_NOT_REPLACED}[a-z0-9._~+/-]++=*+")
_SENTRY_TOKEN = re.compile(r"(?<![A-Za-z0-9_])sntry[su]_[A-Za-z0-9+/=_-]++")


# Text of only these characters holds no control character, email, address or credential
# (but a Sentry token, tested apart).
_PLAIN = re.compile(r"[A-Za-z0-9_-]*+").fullmatch


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _ipv6(match: re.Match[str]) -> str:
    text, start = match.group(), match.start()
    single = text.startswith(":") and (not text.startswith("::") or text.startswith(":::"))
    if start and not single:
        before = match.string[start - 1]
        if before.isalnum() or before == "_":
            return text  # inside a word or a path: ``std::vector``, ``Foo::Bad``
    lead = ""
    if single:
        lead, text = ":", text[1:]  # ``ip:2001:db8::1``, ``ip:::1``
    candidate = text
    for _ in range(2):  # one ``.`` or ``:`` of the sentence after the address
        if _is_ipv6(candidate):
            return f"{lead}[ip]{text[len(candidate) :]}"
        if not candidate or candidate[-1] not in ".:":
            break
        candidate = candidate[:-1]
    return match.group()


def _without_controls(text: str) -> str:
    if text.isascii() and text.isprintable():
        return text
    return _CONTROLS.sub("", _BREAKS.sub(" ", text))


def scrub(text: str, limit: int = LIMIT) -> str:
    """User text made fit for Alertmanager and logs: cut, control characters out,
    credentials, emails and IP addresses replaced, capped at ``limit`` characters.
    Idempotent. (One function, with cheap membership tests before each pattern: it runs
    for every field of every alert.)"""
    if len(text) <= limit and _PLAIN(text) and "sntry" not in text:
        return text  # a name or an id: nothing to take out (most labels, most log fields)
    if len(text) <= _MEMO_LENGTH:
        return _scrub_short(text, limit)
    return _scrub(text, limit)


# Short text repeats from webhook to webhook (tag pairs, environments, releases,
# projects, titles of a noisy issue): scrubbed once, then looked up (a pure function;
# bounded, a few MB at most).
_MEMO_LENGTH = 256


def _scrub(text: str, limit: int) -> str:
    cut = len(text) > limit + _MARGIN
    if cut:
        text = _drop_cut_token(text[: limit + _MARGIN])
    if not (text.isascii() and text.isprintable()):
        text = _CONTROLS.sub("", _BREAKS.sub(" ", text))
    text = redact(text)  # first: a DSN's userinfo would otherwise pass for an email
    if "@" in text:
        text = _EMAIL.sub("[email]", text)
    if text.count(":") >= 2:
        text = _IPV6.sub(_ipv6, text)
    if "." in text:
        text = _IPV4.sub("[ip]", text)
    if len(text) > limit or (cut and len(text) == limit):
        text = text[: limit - 1] + "…"
    elif cut:
        text += "…"
    return text.strip()


_scrub_short = functools.lru_cache(maxsize=8192)(_scrub)


def _names_credential(text: str) -> bool:
    """Whether ``text`` holds what every name in ``_CREDENTIAL_NAMES`` holds: most text holds
    none, and these ``in`` tests cost a tenth of the pattern's scan (or of an IGNORECASE
    alternation)."""
    low = text.lower()
    return (
        "token" in low
        or "secret" in low
        or "pass" in low
        or "pwd" in low
        or "key" in low
        or "sig" in low
        or "auth" in low
        or "credential" in low
        or "dsn" in low
        or "cookie" in low
    )


def redact(text: str) -> str:
    """``text`` with its credentials replaced by ``[secret]``, nothing else changed: for
    text that is the operator's own (an address, a path) or already scrubbed. Idempotent:
    one replacement can make another match (a token inside a URL's userinfo), so the
    patterns run again until nothing changes (twice for most text that holds one)."""
    for _ in range(_ROUNDS):
        done = _redact_once(text)
        if done == text:
            break
        text = done
    return text


_ROUNDS = 4


def _redact_once(text: str) -> str:
    if ("=" in text or ":" in text) and _names_credential(text):
        text = _PARAM.sub(rf"\1{HIDDEN}", text)  # first: ``dsn=https://key@host/1`` whole
    if "://" in text:
        text = _USERINFO.sub(rf"\1{HIDDEN}@", text)
    if "earer" in text or "EARER" in text:
        text = _BEARER.sub(rf"\1{HIDDEN}", text)
    if "sntry" in text:
        text = _SENTRY_TOKEN.sub(HIDDEN, text)
    return text


def scrub_lines(text: str, limit: int = LIMIT) -> str:
    """:func:`scrub` line by line, line feeds kept: a traceback."""
    if "\n" not in text:
        return scrub(text, limit)
    return "\n".join(scrub(line, limit) for line in text.split("\n"))


def _drop_cut_token(text: str) -> str:
    """``text`` without the word the cut went through: an address cut in two is no
    longer recognised (``2001:d``), so its remains go. A word longer than ``_MARGIN`` is
    no address (an email is at most 254 characters) and stays."""
    end = stop = len(text)
    while stop - end < _MARGIN and end and (text[end - 1].isalnum() or text[end - 1] in "._%+-:@"):
        end -= 1
    return text if stop - end == _MARGIN else text[:end]


def clean(text: str, limit: int, *, lines: bool = False) -> str:
    """The operator's text (configuration): control characters out, capped; not scrubbed.
    With ``lines`` (annotations), line feeds stay: the bridge's own multi-line values."""
    if len(text) <= limit and text.isascii() and text.isprintable():
        return text
    text = text[: limit + _MARGIN]
    if lines:
        text = "\n".join(_without_controls(line) for line in text.split("\n"))
    else:
        text = _without_controls(text)
    return (text if len(text) <= limit else text[: limit - 1] + "…").strip()
