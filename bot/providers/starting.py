"""Starting a job exactly once, for every adapter: the provider APIs have no idempotency key, and a lost answer to a
create may still have started (and billed) a job."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import date, datetime, timezone

from bot.providers.types import Job, ProviderError

log = logging.getLogger(__name__)

# How providers word "we no longer create fine-tuning jobs" (as opposed to "this request is wrong").
_STOPPED_WORDS = re.compile(r"deprecat|no longer|not (?:be )?accept|discontinu|sunset|retired|unavailable|shut",
                            re.IGNORECASE)
_STOPPED_CODES = {"fine_tuning_unavailable", "fine_tuning_deprecated", "deprecated", "model_deprecated"}


def stopped_taking_jobs(status: int, message: str, code: str, new_jobs_end: date | None, now: float) -> bool:
    """Whether a refused create means the provider has stopped creating jobs, rather than that this one was wrong."""
    if status not in {400, 403, 404, 410}:
        return False
    if code in _STOPPED_CODES or status == 410:
        return True
    past_end = new_jobs_end is not None and datetime.fromtimestamp(now, timezone.utc).date() >= new_jobs_end
    return bool(_STOPPED_WORDS.search(message)) and (past_end or status in {403, 410} or "fine-tun" in message
                                                     or "fine tun" in message.lower())


def start_once(create: Callable[[], Job], find: Callable[[float], Job | None], *, attempts: int, timeout: float,
               sleep: Callable[[float], None], clock: Callable[[], float]) -> Job:
    """Call `create` until it answers, at most `attempts` times; before each retry, `find(since)` looks for the job a
    lost attempt may have created, so a retry never starts a second one.

    A failure to look is reported as ambiguous: the user is told to check before starting again.
    """
    began = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            return create()
        except ProviderError as error:
            if not error.retryable:
                raise
            failure = error
        try:
            found = find(began)
        except ProviderError as error:
            raise ProviderError(
                f"The provider did not confirm whether the job started ({error.message}). "
                "Check `/finetune list` before starting it again.",
                status=error.status, retryable=False, ambiguous=True,
            ) from None
        if found is not None:
            log.info("job creation answer was lost; found the job it created: %s", found.id)
            return found
        if attempt >= attempts:
            raise failure
        # Never longer than one request may take: a start's whole life stays within 8 timeouts (see bot.app).
        sleep(min(failure.retry_after or 0.5 * attempt, timeout))
