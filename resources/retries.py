"""Retrying a source call on rate limits and server errors, with exponential backoff."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from cbi_assets.raw.errors import SourceUnavailableError

T = TypeVar("T")
log = logging.getLogger("cbi.sources")


def with_retries(
    call: Callable[[], T],
    *,
    what: str,
    transient: Callable[[BaseException], str | None],
    attempts: int,
    backoff_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `call`; on a transient failure wait backoff, 2x backoff, ... and try again.

    `transient` names the failure ("HTTP 429") when a retry may help, else None, in which case
    the error is raised at once. After the last attempt a SourceUnavailableError says what
    kept failing and for how long.
    """
    waited = 0.0
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            reason = transient(exc)
            if reason is None:
                raise
            if attempt == attempts:
                raise SourceUnavailableError(
                    f"{what}: {reason} on all {attempts} attempts over {waited:.1f}s. The source is "
                    "rate-limiting or unavailable; try again later. Nothing was written."
                ) from None
            delay = backoff_seconds * 2 ** (attempt - 1)
            log.warning("%s: %s (attempt %d of %d); retrying in %.1fs", what, reason, attempt, attempts, delay)
            sleep(delay)
            waited += delay
    raise AssertionError("unreachable")
