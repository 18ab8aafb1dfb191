"""The fingerprint of a label set, which the state machine (``bridge.state``) keeps to
tell a repeat of the label set last posted from a change.

The dedup window and repeat escalation themselves live in the per-identity state
(``bridge.state``), persisted in the store, so a restart keeps them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

# One encoder, made once: ``json.dumps`` with these arguments builds a new encoder on every
# call (a fifth of the fingerprint's cost); the text, and so the hash, is the same.
_CANONICAL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable, order-independent hash of a label set (16 hex digits).

    JSON of the sorted pairs keeps ``{"a": "b,c"}`` and ``{"a,b": "c"}`` apart; 64 bits
    are plenty to tell apart the label sets of one identity (Alertmanager's own
    fingerprints are 64-bit too)."""
    canonical = _CANONICAL(sorted(labels.items()))
    return hashlib.blake2b(canonical.encode(), digest_size=8).hexdigest()
