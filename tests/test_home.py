"""The App Home: a person's jobs, month and channels, drawn when they open it and again when a job they started
changes state; within Slack's limits whatever the jobs are called. Through the real server, Bolt and slack_sdk against
the Slack stand-in."""

from __future__ import annotations

import json

from bot.messages.home import HOME_HELP_ACTION
from bot.sandbox.slack import signed_headers, view_action_body
from bot.sandbox.slack_oauth import event_body
from tests.conftest import SIGNING_SECRET, delivered, wait_until
from tests.slack_limits import assert_within_slack_limits


def _open_home(server, user: str = "U0ALICE") -> None:
    body = event_body({"type": "app_home_opened", "user": user, "tab": "home", "channel": "D0HOME"}, team_id="T0")
    status, _ = server.post("/slack/events", body, {**signed_headers(body, SIGNING_SECRET),
                                                    "content-type": "application/json"})
    assert status == 200


def _said(view: dict) -> str:
    return json.dumps(view["blocks"], ensure_ascii=False)


def _started(bot, provider, channel: str, user: str = "U0ALICE", **fields) -> dict:
    job = provider.add_job(status="running", **fields)
    bot.services.store.follows.follow(channel, {**job, "provider": "openai"}, final=False, team_id="T0", user_id=user,
                                      origin="start", card=True)
    return job


def test_the_home_shows_my_jobs_running_first_with_their_cards_my_month_and_my_channels(bot, server, slack, provider):
    finished = _started(bot, provider, "C0GENERAL", estimate=None)
    running = _started(bot, provider, "C0TRAIN")
    someone_elses = _started(bot, provider, "C0GENERAL", user="U0BOB")
    bot.services.store.follows.follow("C0WATCH", {**someone_elses, "provider": "openai"}, final=False, team_id="T0",
                                      user_id="U0ALICE", origin="subscribe")
    provider.set_status(finished["id"], "succeeded")
    bot.services.poller.run_once()
    delivered(bot.services.sender)  # (the cards)
    _open_home(server)
    view = wait_until(lambda: slack.homes.get("U0ALICE"), timeout=5)
    said = _said(view)
    assert view["type"] == "home"
    assert said.index(running["id"]) < said.index(finished["id"])  # running first
    assert someone_elses["id"] not in said  # followed, not started: not hers
    [card] = slack.cards_in("C0TRAIN")
    assert f"https://slack.com/archives/C0TRAIN/p{card['ts'].replace('.', '')}" in said
    assert "2 jobs started" in said
    assert all(f"<#{c}>" in said for c in ("C0GENERAL", "C0TRAIN", "C0WATCH"))
    assert_within_slack_limits(view, kind="view")


def test_a_home_is_redrawn_once_when_a_job_its_person_started_changes_state(bot, server, slack, provider):
    job = _started(bot, provider, "C0GENERAL")
    watcher = provider.add_job(status="running")
    bot.services.store.follows.follow("C0GENERAL", {**watcher, "provider": "openai"}, final=False, team_id="T0",
                                      user_id="U0CAROL", origin="subscribe")
    assert bot.services.home.refresh_due() == 1  # the start itself put the job on Alice's Home
    assert set(slack.homes) == {"U0ALICE"}
    provider.set_status(job["id"], "succeeded")
    provider.set_status(watcher["id"], "succeeded")
    bot.services.poller.run_once()
    # Claimed by one process only: a second store on the same database finds nothing left to draw.
    assert bot.services.store.home.claim_refreshes(limit=10) == ["U0ALICE"]
    assert bot.services.store.home.claim_refreshes(limit=10) == []
    bot.services.store.home.refresh_later("U0ALICE", 0)
    assert bot.services.home.refresh_due() == 1
    assert ":white_check_mark:" in _said(slack.homes["U0ALICE"]) or "succeeded" in _said(slack.homes["U0ALICE"])
    assert "U0CAROL" not in slack.homes  # she only follows: her Home is not redrawn for it


def test_a_home_redraw_slack_refuses_for_now_is_tried_again_later(bot, slack, provider):
    _started(bot, provider, "C0GENERAL")
    slack.fail("status", match="views.publish", status=429, retry_after=30)
    assert bot.services.home.refresh_due() == 0
    assert bot.services.store.home.waiting() == 1  # put back, for after the wait Slack asked for
    assert bot.services.home.refresh_due() == 0 and bot.services.store.home.waiting() == 1


def test_a_home_of_many_jobs_with_hostile_names_stays_within_slacks_limits(bot, server, slack, provider):
    oldest = _started(bot, provider, "C0GENERAL", created_at=1_000_000)  # still running: shown before any finished
    for n in range(70):
        job = _started(bot, provider, f"C0CH{n % 30}", fine_tuned_model=f"ft:<!channel> *bold* <https://evil|x>{n}")
        provider.set_status(job["id"], "succeeded", fine_tuned_model=f"ft:<!channel> <https://evil|x>{n}")
    bot.services.poller.run_once()
    _open_home(server)
    view = wait_until(lambda: slack.homes.get("U0ALICE"), timeout=5)
    assert_within_slack_limits(view, kind="view")
    said = _said(view)
    assert "<!channel>" not in said and "<https://evil" not in said
    assert "30 of your jobs are shown" in said and oldest["id"] in said


def test_the_homes_help_button_opens_help(bot, server, slack):
    _open_home(server)
    home = wait_until(lambda: slack.homes.get("U0ALICE"), timeout=5)
    body = view_action_body({**home, "id": "VHOMEU0ALICE"}, HOME_HELP_ACTION, "help")
    status, _ = server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))
    assert status == 200
    opened = wait_until(lambda: [v for v in slack.view_log if v["kind"] == "open"], timeout=5)
    assert "/finetune start" in json.dumps(opened[0]["view"]["blocks"])
    assert_within_slack_limits(opened[0]["view"], kind="view")
