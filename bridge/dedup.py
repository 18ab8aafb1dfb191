"""The fingerprint of a label set, which the state machine (``bridge.state``) keeps to
tell a repeat of the label set last posted from a change.

The dedup window and repeat escalation themselves live in the per-identity state
(``bridge.state``), persisted in the store, so a restart keeps them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from json.encoder import encode_basestring

# ``encode_basestring`` is the string encoder ``json`` uses with ``ensure_ascii=False`` (C,
# when the C accelerator is there): the canonical text below is what
# ``json.dumps(sorted(labels.items()), ensure_ascii=False, separators=(",", ":"))`` gives,
# built without an encoder object per call (half the fingerprint's cost: issue 15's profile).
_quote = encode_basestring


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable, order-independent hash of a label set (16 hex digits).

    JSON of the sorted pairs keeps ``{"a": "b,c"}`` and ``{"a,b": "c"}`` apart; 64 bits
    are plenty to tell apart the label sets of one identity (Alertmanager's own
    fingerprints are 64-bit too)."""
    pairs = ",".join([f"[{_quote(k)},{_quote(v)}]" for k, v in sorted(labels.items())])
    return hashlib.blake2b(f"[{pairs}]".encode(), digest_size=8).hexdigest()
