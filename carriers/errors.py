"""The carrier error tree. Every carrier client raises only these.

CarrierError
├── CarrierRejected        the carrier said no for a business reason (bad ICCID,
│                          unknown product, out of stock, not allowed in this state);
│                          retrying the same request cannot help — never retried.
├── CarrierUnavailable     the carrier could not answer (connection refused, 5xx,
│                          429); the request did not take effect — retried with
│                          backoff, honouring ``retry_after`` when the carrier sent one.
└── CarrierOutcomeUnknown  the request left but no answer came back (timeout after
                           sending, connection dropped mid-response); it may have
                           taken effect — look at the carrier's state before retrying.

An answer that cannot be read, or that says what no package can be (an allowance of 0
or less), counts as no answer: ``CarrierOutcomeUnknown`` for a request that changes
state, ``CarrierUnavailable`` for a read. Retried, never a line handed to a workflow.
"""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime

# The failure types (Temporal ``ApplicationError.type``) of a carrier call that no retry
# can help: a business rejection, a line already ended, a carrier without a client. Beside
# the errors they name, below both the activities and the workflows' retry policies.
LINE_ENDED = "LineEnded"
NON_RETRYABLE = ["CarrierRejected", LINE_ENDED, "UnknownCarrier"]
# The ``CarrierRejected`` code of a line that must not be ended: ending it would leave the
# eSIM with no pass while never installed, and the carrier take the eSIM back (eSIM Go's
# returns process). The line stays on the eSIM.
LAST_BUNDLE = "last_bundle"


class CarrierError(Exception):
    """Base of every carrier failure."""

    def __init__(self, carrier: str, message: str) -> None:
        super().__init__(f"{carrier}: {message}")
        self.carrier = carrier
        self.message = message


class CarrierRejected(CarrierError):
    """A business rejection; ``code`` is the carrier's own error code or HTTP status."""

    def __init__(self, carrier: str, message: str, code: str = "") -> None:
        super().__init__(carrier, message)
        self.code = code


class CarrierUnavailable(CarrierError):
    """The carrier did not take the request; safe to retry after ``retry_after`` seconds."""

    def __init__(self, carrier: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(carrier, message)
        self.retry_after = retry_after


class CarrierOutcomeUnknown(CarrierError):
    """The request may have taken effect; look before retrying."""


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: either delay-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
