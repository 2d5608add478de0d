"""A warning for every rejected webhook, rate-limited so a flood of bad deliveries cannot fill the disk.

The `limits` package (moving windows in process memory) decides which rejections are written: at most
`PER_KEY_PER_MINUTE` per (source, reason) and `TOTAL_PER_MINUTE` in all; the ones held back are counted and the
count rides on the next line written for that key (`suppressed`), so the operator still sees a flood's size.
Lines carry the source, reason, status, delivery id and remote address: never the body, a header value other
than the delivery id, or a secret.
"""

from __future__ import annotations

import threading

import structlog
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

log = structlog.get_logger(__name__)

PER_KEY_PER_MINUTE = 10
TOTAL_PER_MINUTE = 60  # at ~300 bytes a line, a sustained flood writes at most ~26 MB a day
KNOWN_SOURCES = frozenset({"jira", "servicenow"})
_MAX_FIELD = 200


def _printable(value: str | None) -> str | None:
    """A sender-controlled value made safe for a log line: printable characters only, bounded."""
    if value is None:
        return None
    return "".join(c if c.isprintable() else "?" for c in value[:_MAX_FIELD])


class RejectionLog:
    """One per API process (app.state.rejections): logs rejected deliveries within the rate limits."""

    def __init__(self, *, per_key: int = PER_KEY_PER_MINUTE, total: int = TOTAL_PER_MINUTE) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._per_key = RateLimitItemPerMinute(per_key)
        self._total = RateLimitItemPerMinute(total)
        self._suppressed: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def rejected(
        self,
        *,
        source: str,
        reason: str,
        status: int,
        delivery_id: str | None,
        remote_addr: str | None,
        detail: str | None = None,
    ) -> bool:
        """Log one rejection (True) or count it for the next line (False) when over the limit."""
        key_source = source if source in KNOWN_SOURCES else "unknown"  # the path segment is the sender's choice
        key = (key_source, reason[:50])
        with self._lock:
            allowed = self._limiter.test(self._total) and self._limiter.hit(self._per_key, *key)
            if allowed:
                self._limiter.hit(self._total)
                suppressed = self._suppressed.pop(key, 0)
            else:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
        log.warning(
            "webhook_rejected",
            source=key_source if key_source != "unknown" else _printable(source[:50]),
            reason=key[1],
            status=status,
            delivery_id=_printable(delivery_id),
            remote_addr=_printable(remote_addr),
            detail=_printable(detail),
            suppressed=suppressed,
        )
        return True
