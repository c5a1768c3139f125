"""Each person's App Home: drawn when they open it, and again when a job they started changes state (owed in the
transaction that records the change, claimed by one process, published at the next delivery run)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone

from bot.messages.answers import format_help
from bot.messages.home import HOME_CHANNELS, HOME_JOBS, help_modal, home_view
from bot.slack import SlackFailure, SlackGateway
from storage import Store

log = logging.getLogger(__name__)

REFRESHES_PER_RUN = 50  # Homes redrawn a run at most (views.publish is Tier 4: 100+ a minute)
RETRY_AFTER = 30.0  # seconds before a Home Slack would not take is tried again


class HomeService:
    def __init__(self, store: Store, slack: SlackGateway, *, clock: Callable[[], float] = time.time,
                 keys_for: Callable[[str], bool] = lambda user_id: False) -> None:
        self.store, self.slack, self.clock = store, slack, clock
        self.keys_for = keys_for  # whether a person may change their workspace's provider keys (its admins)

    def view_for(self, user_id: str) -> dict:
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        start = datetime(now.year, now.month, 1, tzinfo=timezone.utc)
        end = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=timezone.utc)
        started = self.store.home.started(user_id, limit=HOME_JOBS + 1)
        return home_view(started=started[:HOME_JOBS], total_started=len(started),
                         month=self.store.home.month(user_id, start.timestamp(), end.timestamp()),
                         month_name=now.strftime("%B %Y"),
                         channels=self.store.home.channels(user_id, limit=HOME_CHANNELS),
                         keys_button=self._keys_for(user_id))

    def _keys_for(self, user_id: str) -> bool:
        try:
            return self.keys_for(user_id)
        except SlackFailure as failure:  # (users.info would not say: no button this time, the Home still drawn)
            log.info("could not tell whether a person is an admin (%s)", failure.reason)
            return False

    def publish(self, user_id: str) -> None:
        """Draw `user_id`'s Home now (they opened it, or it is owed a redraw)."""
        self.slack.publish_home(user_id, self.view_for(user_id))

    def refresh_due(self) -> int:
        """Redraw the Homes owed one (each claimed by this process only); a Slack failure puts it back for later."""
        done = 0
        for user_id in self.store.home.claim_refreshes(limit=REFRESHES_PER_RUN):
            try:
                self.publish(user_id)
                done += 1
            except SlackFailure as failure:
                if failure.permanent:
                    log.info("could not redraw a Home (%s); it is drawn again when opened", failure.reason)
                else:
                    self.store.home.refresh_later(user_id, self.clock() + (failure.retry_after or RETRY_AFTER))
        return done

    def help_view(self) -> dict:
        return help_modal(format_help().blocks)
