"""Each workspace's own provider keys (OAuth mode): `/finetune keys` for its admins, sealed at rest, never shown again
nor logged; everything a workspace does at a provider uses its own key (commands and the scheduler's polls), the
environment's keys only where the operator shares them, and no workspace spends another's money. The real Bolt and
slack_sdk against the Slack stand-in, the real OpenAI SDK against the OpenAI sandbox."""

from __future__ import annotations

import base64
import io
import json
import logging
import pathlib
import secrets as random_bytes
import time

import pytest
from cryptography.fernet import Fernet

from bot import logs
from bot.keyring import acting_for
from bot.messages.keys import KEYS_CALLBACK
from bot.sandbox.slack import signed_headers, slash_command_body, view_submission_body
from bot.scrub import Scrubber, learn
from tests.conftest import SIGNING_SECRET, Server, delivered, wait_until
from tests.test_installs import _install, oauth_changes

KEY_ONE = "sk-workspace-one-key-0000000000000000abcd"
KEY_TWO = "sk-workspace-two-key-1111111111111111wxyz"


@pytest.fixture
def keyed(make_bot, slack):
    """An OAuth bot whose environment's OpenAI key is shared with no workspace; T0ONE and T0TWO installed, each
    with an admin (U0ADMIN1, U0ADMIN2)."""
    bot = make_bot(**oauth_changes(shared=frozenset()))
    server = Server(bot)
    for team in ("T0ONE", "T0TWO"):
        assert _install(server, slack, team)[0] == 200
    slack.roles.update({"U0ADMIN1": "admin", "U0ADMIN2": "owner"})
    yield bot, server
    server.close()


def _command(server: Server, slack, text: str, *, team: str, channel: str, user: str) -> None:
    body = slash_command_body(text, channel_id=channel, team_id=team, user_id=user,
                              response_url=slack.response_url(f"{team}-{user}"))
    status, raw = server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))
    assert status == 200, raw


def _replies(slack, team: str, user: str) -> list[str]:
    return [json.dumps(r) for r in slack.responses if r["url"].endswith(f"/{team}-{user}")]


def _keys_form(server: Server, slack, *, team: str, user: str) -> dict:
    before = len(slack.view_log)
    _command(server, slack, "keys", team=team, channel=f"C0{team}", user=user)
    opened = wait_until(lambda: [v for v in slack.view_log[before:] if v["kind"] == "open"], timeout=5)
    return opened[0]


def _submit(server: Server, slack, view: dict, *, team: str, user: str, provider: str = "openai", key: str = "",
            **settings: str) -> tuple[int, bytes]:
    values = {"provider": {"value": {"type": "static_select", "selected_option": {"value": provider}}},
              "key": {"value": {"type": "plain_text_input", "value": key}}}
    values.update({f"setting:{name}": {"value": {"type": "plain_text_input", "value": value}}
                   for name, value in settings.items()})
    body = view_submission_body(view, values, user_id=user, team_id=team)
    return server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))


def _said_in_view(slack, view_id: str) -> str:
    return json.dumps(slack.views[view_id]["blocks"])


def test_an_admin_sets_a_key_in_the_form_sealed_and_the_workspaces_jobs_use_it(keyed, slack, provider, settings):
    bot, server = keyed
    opened = _keys_form(server, slack, team="T0ONE", user="U0ADMIN1")
    view = opened["view"]
    assert view["callback_id"] == KEYS_CALLBACK and opened["by"] == ("T0ONE", None)
    assert "no key" in _said_in_view(slack, view["id"])
    status, raw = _submit(server, slack, view, team="T0ONE", user="U0ADMIN1", key=KEY_ONE)
    assert status == 200 and json.loads(raw)["response_action"] == "update"  # "Saving…", in the ack
    said = wait_until(lambda: "Saved" in _said_in_view(slack, view["id"]) and _said_in_view(slack, view["id"]),
                      timeout=5)
    assert "ending in abcd" in said and KEY_ONE not in said
    # Sealed: the database's bytes (its WAL included) never hold it; the form shows at most its last four characters.
    raw_db = b"".join(p.read_bytes() for p in pathlib.Path(settings.database_path).parent.glob("bot.db*"))
    assert KEY_ONE.encode() not in raw_db and b"workspace-one" not in raw_db
    again = _keys_form(server, slack, team="T0ONE", user="U0ADMIN1")
    shown = _said_in_view(slack, again["view"]["id"])
    assert "own key, ending in `abcd`" in shown and KEY_ONE not in shown

    # The workspace's command and the scheduler's poll of its job both use its own key, never the environment's.
    job = provider.add_job(status="running")
    provider.train(job["id"], 3, total=10)  # (metrics: its success's chart is read with the same key)
    before = len(provider.received)
    _command(server, slack, f"subscribe {job['id']}", team="T0ONE", channel="C0ONE", user="U0ALICE")
    wait_until(lambda: bot.services.store.follows.followers(job["id"], "openai"), timeout=5)
    provider.set_status(job["id"], "succeeded")
    bot.services.poller.run_once()
    delivered(bot.services.sender)
    assert slack.outcomes_in("C0ONE")
    assert wait_until(lambda: slack.uploads, timeout=30)  # the chart, drawn after the announcement
    used = {r.headers.get("authorization") for r in provider.received[before:]}
    assert used == {f"Bearer {KEY_ONE}"}


def test_a_workspace_without_a_key_is_told_how_to_add_one_and_spends_nothing(keyed, slack, provider):
    bot, server = keyed
    opened = _keys_form(server, slack, team="T0ONE", user="U0ADMIN1")
    _submit(server, slack, opened["view"], team="T0ONE", user="U0ADMIN1", key=KEY_ONE)
    wait_until(lambda: bot.services.store.workspaces.keys("T:T0ONE"), timeout=5)
    before = len(provider.received)
    _command(server, slack, "start file-abc", team="T0TWO", channel="C0TWO", user="U0BOB")
    _command(server, slack, "list", team="T0TWO", channel="C0TWO", user="U0BOB")
    replies = wait_until(lambda: len(_replies(slack, "T0TWO", "U0BOB")) >= 2 and _replies(slack, "T0TWO", "U0BOB"),
                         timeout=5)
    assert all("/finetune keys" in r for r in replies)
    assert provider.received[before:] == []  # not one request, with anyone's key


def test_only_admins_change_keys_and_a_members_forged_submission_changes_nothing(keyed, slack):
    bot, server = keyed
    _command(server, slack, "keys", team="T0ONE", channel="C0ONE", user="U0ALICE")
    refused = wait_until(lambda: _replies(slack, "T0ONE", "U0ALICE"), timeout=5)
    assert "admins and owners" in refused[0] and not [v for v in slack.view_log if v["kind"] == "open"]
    # A member who sends the form anyway (a copy of an admin's): checked again after the ack, nothing stored.
    opened = _keys_form(server, slack, team="T0ONE", user="U0ADMIN1")
    _submit(server, slack, opened["view"], team="T0ONE", user="U0ALICE", key=KEY_ONE)
    wait_until(lambda: "admins and owners" in _said_in_view(slack, opened["view"]["id"]), timeout=5)
    assert bot.services.store.workspaces.keys("T:T0ONE") == []
    # ADMIN_USER_IDS names others who may.
    bot.services.keys.admins = frozenset({"U0ALICE"})
    _submit(server, slack, opened["view"], team="T0ONE", user="U0ALICE", key=KEY_ONE)
    assert wait_until(lambda: bot.services.store.workspaces.keys("T:T0ONE"), timeout=5)


def test_the_forms_mistakes_are_shown_in_the_ack_and_a_key_is_replaced_then_removed(keyed, slack):
    bot, server = keyed
    view = _keys_form(server, slack, team="T0ONE", user="U0ADMIN1")["view"]
    status, raw = _submit(server, slack, view, team="T0ONE", user="U0ADMIN1", key="not a key")
    assert status == 200 and "key" in json.loads(raw)["errors"]
    status, raw = _submit(server, slack, view, team="T0ONE", user="U0ADMIN1", provider="fireworks",
                          key="fw_0123456789abcdef")
    assert "setting:FIREWORKS_ACCOUNT_ID" in json.loads(raw)["errors"]  # Fireworks' key goes with its account
    for hostile in ("../../v1/accounts/other", "acct <!channel>"):  # an id that would go into its URLs
        status, raw = _submit(server, slack, view, team="T0ONE", user="U0ADMIN1", provider="fireworks",
                              key="fw_0123456789abcdef", FIREWORKS_ACCOUNT_ID=hostile)
        assert "setting:FIREWORKS_ACCOUNT_ID" in json.loads(raw)["errors"]
    status, raw = _submit(server, slack, view, team="T0ONE", user="U0ADMIN1", key="sk-" + "x" * 600)  # forged length
    assert "key" in json.loads(raw)["errors"]
    status, raw = _submit(server, slack, view, team="T0ONE", user="U0ADMIN1", key="sk-ключ-0123456789")  # not ASCII
    assert "key" in json.loads(raw)["errors"]
    assert bot.services.store.workspaces.keys("T:T0ONE") == []
    _submit(server, slack, view, team="T0ONE", user="U0ADMIN1", key=KEY_ONE)
    wait_until(lambda: bot.services.store.workspaces.keys("T:T0ONE"), timeout=5)
    _submit(server, slack, view, team="T0ONE", user="U0ADMIN1", key=KEY_TWO)
    assert wait_until(lambda: [k["last4"] for k in bot.services.store.workspaces.keys("T:T0ONE")] == ["wxyz"],
                      timeout=5)
    _submit(server, slack, view, team="T0ONE", user="U0ADMIN1", key="")
    assert wait_until(lambda: bot.services.store.workspaces.keys("T:T0ONE") == [], timeout=5)
    assert wait_until(lambda: "Removed" in _said_in_view(slack, view["id"]), timeout=5)


def test_the_environments_keys_serve_only_the_workspaces_the_operator_names(make_bot, slack, provider):
    bot = make_bot(**oauth_changes(shared=frozenset({"T0ONE"})))
    server = Server(bot)
    try:
        for team in ("T0ONE", "T0TWO"):
            assert _install(server, slack, team)[0] == 200
        _command(server, slack, "list", team="T0ONE", channel="C0ONE", user="U0ALICE")
        _command(server, slack, "list", team="T0TWO", channel="C0TWO", user="U0BOB")
        one = wait_until(lambda: _replies(slack, "T0ONE", "U0ALICE"), timeout=5)
        two = wait_until(lambda: _replies(slack, "T0TWO", "U0BOB"), timeout=5)
        assert "/finetune keys" not in one[0] and "/finetune keys" in two[0]
    finally:
        server.close()


def test_an_uninstalled_workspaces_jobs_are_no_longer_polled_even_with_shared_keys(make_bot, slack, provider):
    from bot.sandbox.slack_oauth import event_body

    bot = make_bot(**oauth_changes())  # (the environment's keys shared with every workspace)
    server = Server(bot)
    try:
        assert _install(server, slack, "T0ONE")[0] == 200
        job = provider.add_job(status="running")
        _command(server, slack, f"subscribe {job['id']}", team="T0ONE", channel="C0ONE", user="U0ALICE")
        wait_until(lambda: bot.services.store.follows.followers(job["id"], "openai"), timeout=5)
        body = event_body({"type": "app_uninstalled"}, team_id="T0ONE")
        assert server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))[0] == 200
        wait_until(lambda: not bot.services.store.workspaces.installations(), timeout=5)
        before = len(provider.received)
        report = bot.services.poller.run_once()
        assert report.unconfigured == 1 and provider.received[before:] == []
    finally:
        server.close()


def test_a_key_learned_while_running_is_scrubbed_from_every_log_line_after():
    stream = io.StringIO()
    handler = logs.configure("INFO", [], stream=stream)
    try:
        secret = "tg-learned-secret-key-98765"
        learn(secret)
        logging.getLogger("bot.test").info("a provider said %s", secret)
        assert secret not in stream.getvalue() and "[redacted]" in stream.getvalue()
        assert Scrubber([], learned=True)(f"x {secret}") == "x [redacted]"
    finally:
        logging.getLogger().removeHandler(handler)


def test_an_admins_home_has_a_provider_keys_button_that_opens_the_form_and_a_members_has_none(keyed, slack):
    from bot.messages.home import HOME_KEYS_ACTION
    from bot.sandbox.slack import view_action_body
    from bot.sandbox.slack_oauth import event_body

    bot, server = keyed
    for user in ("U0ADMIN1", "U0ALICE"):
        body = event_body({"type": "app_home_opened", "user": user, "tab": "home", "channel": "D0HOME"},
                          team_id="T0ONE")
        assert server.post("/slack/events", body, {**signed_headers(body, SIGNING_SECRET),
                                                   "content-type": "application/json"})[0] == 200
    admin = wait_until(lambda: slack.homes.get("U0ADMIN1"), timeout=5)
    member = wait_until(lambda: slack.homes.get("U0ALICE"), timeout=5)
    assert HOME_KEYS_ACTION in json.dumps(admin["blocks"]) and HOME_KEYS_ACTION not in json.dumps(member["blocks"])
    before = len(slack.view_log)
    body = view_action_body({**admin, "id": "VHOMEU0ADMIN1"}, HOME_KEYS_ACTION, "keys", user_id="U0ADMIN1",
                            team_id="T0ONE")
    assert server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))[0] == 200
    opened = wait_until(lambda: [v for v in slack.view_log[before:] if v["kind"] == "open"], timeout=5)
    assert opened[0]["view"]["callback_id"] == KEYS_CALLBACK and opened[0]["by"] == ("T0ONE", None)


def test_a_workspace_with_only_its_own_openai_key_hears_of_openais_dates(make_bot, slack, settings):
    """`retiring`'s notices come from the providers' own dates: a workspace whose only OpenAI key is its own hears
    them too (here OpenAI itself, no base URL: nothing is asked of it, its dates are facts)."""
    from datetime import datetime, timezone

    env = {k: v for k, v in settings.env.items() if k not in {"OPENAI_BASE_URL", "OPENAI_API_KEY"}}
    bot = make_bot(**oauth_changes(shared=frozenset()), env=env)
    server = Server(bot)
    try:
        assert _install(server, slack, "T0ONE")[0] == 200
        bot.services.keys.keyring.set_key("T:T0ONE", "openai", {"OPENAI_API_KEY": KEY_ONE}, user_id="U0ADMIN1")
        store = bot.services.store
        store.follows.follow("C0ONE", {"id": "ftjob-mine", "provider": "openai", "status": "succeeded",
                                       "state": "succeeded", "model": "gpt-4o-mini-2024-07-18",
                                       "fine_tuned_model": "ft:gpt-4o-mini-2024-07-18:org::mine"},
                             final=True, team_id="T0ONE", user_id="U0ALICE", origin="start")
        store.workspaces.claim_job("openai", "ftjob-mine", "T:T0ONE")
        store.workspaces.note_channel("C0ONE", "T:T0ONE")
        bot.services.moves.clock = lambda: datetime(2026, 12, 10, 12, tzinfo=timezone.utc).timestamp()
        assert bot.services.moves.notify_retiring() >= 1
        delivered(bot.services.sender)
        [notice] = [m for m in slack.messages_in("C0ONE") if "at risk" in m.get("text", "")][:1]
        assert notice["by"] == ("T0ONE", None) and "2027-01-06" in notice["text"]
    finally:
        server.close()


def test_a_key_replaced_again_and_again_leaves_no_connection_open(make_bot, slack, provider):
    """Each new key builds the workspace's providers again; the ones replaced are closed once every request they may
    be making is over (eight provider timeouts), so their connections do not pile up until a garbage collection."""
    import time
    from urllib.parse import urlsplit

    bot = make_bot(**oauth_changes(shared=frozenset()), provider_timeout_seconds=0.1)  # (a grace of 0.8 s)
    server = Server(bot)
    try:
        assert _install(server, slack, "T0ONE")[0] == 200
        keyring = bot.services.keys.keyring

        def use(n: int) -> None:
            keyring.set_key("T:T0ONE", "openai", {"OPENAI_API_KEY": f"sk-replaced-key-{n:012d}"}, user_id="U0ADMIN1")
            keyring.providers_for("T:T0ONE").get("openai").list_jobs(5)

        port = urlsplit(provider.url).port

        def settled() -> int:
            """Connections open to the provider now (established, either end: the bot's and the stand-in's)."""
            time.sleep(1.0)
            keyring.providers_for("T:T0ONE")  # (closes what is past its grace)
            with open("/proc/self/net/tcp") as table:
                rows = [line.split() for line in table.read().splitlines()[1:]]
            return sum(1 for row in rows if row[3] == "01" and int(row[2].rsplit(":", 1)[1], 16) == port)

        for n in range(3):
            use(n)
        before = settled()
        for n in range(3, 30):
            use(n)
        assert settled() <= before + 1
    finally:
        server.close()


def test_a_bot_of_one_workspace_says_its_keys_are_the_environments(bot, slack):
    server = Server(bot)
    try:
        body = slash_command_body("keys", response_url=slack.response_url("one"))
        assert server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))[0] == 200
        [reply] = wait_until(lambda: [r for r in slack.responses if r["url"].endswith("/one")], timeout=5)
        assert "serves one workspace" in json.dumps(reply) and not slack.view_log
    finally:
        server.close()


def test_an_interrupted_start_is_looked_up_with_its_workspaces_own_key(keyed, slack, provider):
    """A start whose process died while asking is settled by whichever replica finds it, with the key of the
    workspace it was typed in (written down with it: in a Slack Connect channel another workspace may have spoken
    since): at the provider, only that key's account has the job, and the job becomes that workspace's own."""
    from bot.providers.openai_shape import REQUEST_KEY
    from bot.sandbox.files import SAMPLE_FILE_ID

    bot, server = keyed
    bot.services.keys.keyring.set_key("T:T0ONE", "openai", {"OPENAI_API_KEY": KEY_ONE}, user_id="U0ADMIN1")
    provider.accounts = True
    job = provider.add_job(status="running", metadata={REQUEST_KEY: "req-mine"}, _account=KEY_ONE)
    store = bot.services.store
    store.workspaces.note_channel("C0ONE", "T:T0TWO")  # (shared with T0TWO, who spoke there last)
    with acting_for("T:T0ONE"):
        store.replays.record_intent("req-mine", team_id="T0ONE", channel_id="C0ONE", user_id="U0ALICE",
                                    response_url=slack.response_url("mine"), training_file=SAMPLE_FILE_ID,
                                    model=job["model"], suffix=None, provider="openai")
    assert bot.services.jobs.reconcile_starts(older_than=0, worker="w") == 1
    assert [f["id"] for f in store.follows.channel_follows("C0ONE")] == [job["id"]]
    assert store.workspaces.owners([("openai", job["id"])]) == {("openai", job["id"]): "T:T0ONE"}


def test_a_watchdog_cancel_left_by_a_stopped_process_is_sent_with_the_jobs_workspaces_key(keyed, slack, provider):
    bot, server = keyed
    bot.services.keys.keyring.set_key("T:T0ONE", "openai", {"OPENAI_API_KEY": KEY_ONE}, user_id="U0ADMIN1")
    provider.accounts = True
    job = provider.add_job(status="running", _account=KEY_ONE)
    store = bot.services.store
    store.follows.follow("C0ONE", job, final=False, team_id="T0ONE", user_id="U0ALICE", origin="start")
    store.workspaces.claim_job("openai", job["id"], "T:T0ONE")
    store.channels.set_channel_settings("C0ONE", "U0ALICE", progress=False, watchdog="cancel")
    claim = store.watch.claim("openai", job["id"], "nan", {"step": 2, "which": "training", "value": "nan"},
                              lambda followers: True)  # (claimed; its process stopped before it cancelled)
    assert claim is not None and claim.cancelling
    assert bot.services.poller.watchdog.finish_interrupted(bot.services.providers, older_than=0) == 1
    [cancel] = provider.requests_to(f"/fine_tuning/jobs/{job['id']}/cancel", "POST")
    assert cancel.headers["authorization"] == f"Bearer {KEY_ONE}"


def test_the_keys_form_and_its_answers_stay_within_slacks_limits_whatever_is_stored():
    from bot.keyring import optional_secrets, settable
    from bot.messages.keys import keys_done_view, keys_form_view, keys_lines
    from tests.slack_limits import assert_within_slack_limits

    hostile = "<!channel> *x* <https://evil|y>"
    stored = [{"provider": name, "last4": hostile[:4], "set_by": hostile, "set_at": 1.8e9} for name in settable()]
    lines = keys_lines(settable(), stored, [])
    view = keys_form_view(settable=settable(), lines=lines, metadata="", secrets=optional_secrets())
    assert_within_slack_limits(view, kind="view")
    assert "<!channel>" not in json.dumps(view) and "<https://evil" not in json.dumps(view)
    assert_within_slack_limits(keys_done_view(hostile * 50), kind="view")


def test_each_workspaces_own_webhooks_are_verified_with_its_secret_and_concern_only_its_jobs(keyed, slack,
                                                                                            provider):
    """A workspace that sets its own OpenAI signing secret with its key gets a webhook route of its own: a delivery
    signed with that secret announces its job at once (read with its key), once; the operator's secret, another
    workspace's, or another's job change nothing; a workspace with no secret of its own has no route."""
    from bot.sandbox.openai import sign_webhook
    from tests.conftest import WEBHOOK_SECRET

    bot, server = keyed
    secret_one = "whsec_" + base64.b64encode(random_bytes.token_bytes(24)).decode()
    secret_two = "whsec_" + base64.b64encode(random_bytes.token_bytes(24)).decode()
    view = _keys_form(server, slack, team="T0ONE", user="U0ADMIN1")["view"]
    assert "OPENAI_WEBHOOK_SECRET" in json.dumps(view)
    for mistake in ({"key": "", "OPENAI_WEBHOOK_SECRET": secret_one},  # a secret without its key
                    {"key": KEY_ONE, "OPENAI_WEBHOOK_SECRET": "whsec_ has spaces"}):
        status, raw = _submit(server, slack, view, team="T0ONE", user="U0ADMIN1", **mistake)
        assert "setting:OPENAI_WEBHOOK_SECRET" in json.loads(raw)["errors"]
    _submit(server, slack, view, team="T0ONE", user="U0ADMIN1", key=KEY_ONE, OPENAI_WEBHOOK_SECRET=secret_one)
    said = wait_until(lambda: "Saved" in _said_in_view(slack, view["id"]) and _said_in_view(slack, view["id"]),
                      timeout=5)
    assert "/openai/webhook/T0ONE" in said and secret_one not in said
    assert secret_one not in Scrubber(learned=True)(f"a log line naming {secret_one}")  # (never logged either)
    jobs = {}
    for team in ("T0ONE", "T0TWO"):
        jobs[team] = provider.add_job(status="running")
        bot.services.store.workspaces.claim_job("openai", jobs[team]["id"], f"T:{team}")
        bot.services.store.follows.follow(f"C0{team}", jobs[team], final=False, team_id=team, user_id="U0ALICE",
                                          origin="start")
        provider.set_status(jobs[team]["id"], "succeeded")

    def deliver(path: str, job_id: str, secret: str, webhook_id: str = "") -> int:
        body = json.dumps({"id": f"evt_{job_id}", "object": "event", "created_at": 1, "data": {"id": job_id},
                           "type": "fine_tuning.job.succeeded"})
        return server.post(path, body, sign_webhook(body, secret, webhook_id=webhook_id or None))[0]

    reads = len(provider.received)
    assert deliver("/openai/webhook/T0ONE", jobs["T0ONE"]["id"], WEBHOOK_SECRET) == 400  # the operator's secret
    assert deliver("/openai/webhook/T0ONE", jobs["T0ONE"]["id"], secret_two) == 400
    assert deliver("/openai/webhook/T0TWO", jobs["T0TWO"]["id"], secret_two) == 404  # no key or secret of its own
    for hostile in ("/openai/webhook/", "/openai/webhook/..", "/openai/webhook/t0one", "/openai/webhook/T0NONE"):
        assert deliver(hostile, jobs["T0ONE"]["id"], secret_one) == 404
    assert deliver("/openai/webhook/T0ONE", jobs["T0TWO"]["id"], secret_one) == 200  # another's job: nothing
    view_two = _keys_form(server, slack, team="T0TWO", user="U0ADMIN2")["view"]
    _submit(server, slack, view_two, team="T0TWO", user="U0ADMIN2", key=KEY_TWO, OPENAI_WEBHOOK_SECRET=secret_two)
    assert wait_until(lambda: deliver("/openai/webhook/T0TWO", jobs["T0ONE"]["id"], secret_two, "wh_one") == 200,
                      timeout=5)  # T0TWO's own delivery, naming T0ONE's job and taking its id first: nothing
    for _ in range(2):  # delivered twice (at least once, as webhooks are): announced once
        assert deliver("/openai/webhook/T0ONE", jobs["T0ONE"]["id"], secret_one, webhook_id="wh_one") == 200
    [posted] = wait_until(lambda: slack.outcomes_in("C0T0ONE"), timeout=5)  # without a poll
    assert posted["by"] == ("T0ONE", None)
    time.sleep(0.3)
    assert slack.outcomes_in("C0T0TWO") == [] and len(slack.outcomes_in("C0T0ONE")) == 1
    fetched = [r for r in provider.received[reads:] if r.path.endswith(jobs["T0ONE"]["id"])]
    assert fetched and {r.headers.get("authorization") for r in fetched} == {f"Bearer {KEY_ONE}"}
    assert not [r for r in provider.received[reads:] if r.path.endswith(jobs["T0TWO"]["id"])]
    # Saved again without its secret: the route is gone (only polling hears of its jobs).
    _submit(server, slack, view, team="T0ONE", user="U0ADMIN1", key=KEY_ONE)
    assert wait_until(lambda: deliver("/openai/webhook/T0ONE", jobs["T0ONE"]["id"], secret_one) == 404, timeout=5)


def test_a_workspace_whose_own_key_cannot_be_opened_has_no_webhooks_even_with_the_operators_keys(make_bot, slack,
                                                                                                 provider):
    """Its own key sealed under a key no longer in ENCRYPTION_KEYS: it falls back to the operator's keys (shared with
    it), but its webhook route never takes the operator's provider, whose secret would verify the operator's
    deliveries there. A secret set is scrubbed from logs from that moment, before any provider is built with it."""
    from bot.sandbox.openai import sign_webhook
    from tests.conftest import WEBHOOK_SECRET

    bot = make_bot(**oauth_changes(shared=frozenset({"T0ONE"})))
    server = Server(bot)
    try:
        assert _install(server, slack, "T0ONE")[0] == 200
        secret = "plain-" + random_bytes.token_hex(12)  # (not shaped like a credential: only learning finds it)
        bot.services.keys.keyring.set_key("T:T0ONE", "openai", {"OPENAI_API_KEY": KEY_ONE,
                                                               "OPENAI_WEBHOOK_SECRET": secret}, user_id="U0ADMIN1")
        assert secret not in Scrubber(learned=True)(f"a log line naming {secret}")
        job = provider.add_job(status="succeeded")
        bot.services.store.workspaces.claim_job("openai", job["id"], "T:T0ONE")
        bot.services.store.follows.follow("C0ONE", job, final=False, team_id="T0ONE", user_id="U", origin="start")
        other = Fernet(Fernet.generate_key()).encrypt(b'{"OPENAI_API_KEY": "sk-lost"}').decode()
        bot.services.store.workspaces.set_key("T:T0ONE", "openai", sealed=other, last4="", user_id="U0ADMIN1")
        bot.services.keys.keyring.forget("T:T0ONE")
        body = json.dumps({"id": "evt_1", "object": "event", "created_at": 1, "data": {"id": job["id"]},
                           "type": "fine_tuning.job.succeeded"})
        assert server.post("/openai/webhook/T0ONE", body, sign_webhook(body, WEBHOOK_SECRET))[0] == 404
    finally:
        server.close()


def test_a_held_start_approved_from_another_workspace_starts_with_the_askers_key_and_is_its_job(make_bot, slack,
                                                                                               provider):
    """An approver (APPROVER_USER_IDS) of another workspace approves a start held in a Slack Connect channel: it
    starts with the key of the workspace that asked, is that workspace's job, and costs the approver's nothing."""
    from bot.sandbox.files import SAMPLE_FILE_ID
    from bot.sandbox.slack import block_action_body

    bot = make_bot(**oauth_changes(shared=frozenset()), approver_user_ids=frozenset({"U0APPROVER"}))
    server = Server(bot)
    try:
        for team in ("T0ONE", "T0TWO"):
            assert _install(server, slack, team)[0] == 200
        for team, key in (("T0ONE", KEY_ONE), ("T0TWO", KEY_TWO)):
            bot.services.keys.keyring.set_key(f"T:{team}", "openai", {"OPENAI_API_KEY": key}, user_id="U0ADMIN")
        provider.accounts = True
        _command(server, slack, "settings budget=0", team="T0ONE", channel="C0SHARED", user="U0ALICE")
        _command(server, slack, f"start {SAMPLE_FILE_ID}", team="T0ONE", channel="C0SHARED", user="U0ALICE")
        [request] = wait_until(lambda: [m for m in slack.messages_in("C0SHARED") if "needs approval" in m["text"]],
                               timeout=10)
        [button] = [e for b in request["blocks"] if b["type"] == "actions" for e in b["elements"]
                    if e["action_id"] == "hold_approve"]
        body = block_action_body("hold_approve", button["value"], user_id="U0APPROVER", channel_id="C0SHARED",
                                 team_id="T0TWO", response_url=slack.response_url("approve"),
                                 message_ts=request["ts"])
        assert server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))[0] == 200
        [job] = wait_until(lambda: list(provider.jobs.values()), timeout=10)
        assert job["_account"] == KEY_ONE
        assert wait_until(lambda: bot.services.store.workspaces.owners([("openai", job["id"])]), timeout=5) == {
            ("openai", job["id"]): "T:T0ONE"}
    finally:
        server.close()


def test_a_workspaces_training_file_is_read_and_its_chart_uploaded_with_its_own_token(keyed, slack, provider):
    """The start form's file, picked in T0ONE, is looked up and downloaded with T0ONE's token (another workspace's
    install cannot read it), the job is started with T0ONE's key, and the chart after its success is uploaded with
    T0ONE's token, by the scheduler, whichever workspace spoke last."""
    from bot.sandbox.slack import view_action_body, view_submission_body
    from bot.views import DATA_CONFIRM_ACTION
    from tests.test_data_flow import _clean, _settled, _values

    bot, server = keyed
    bot.services.keys.keyring.set_key("T:T0ONE", "openai", {"OPENAI_API_KEY": KEY_ONE}, user_id="U0ADMIN1")
    provider.accounts = True
    before = len(slack.view_log)
    _command(server, slack, "start", team="T0ONE", channel="C0ONE", user="U0ALICE")
    [opened] = wait_until(lambda: [v for v in slack.view_log[before:] if v["kind"] == "open"], timeout=5)
    form = slack.views[opened["view_id"]]
    file_id = slack.add_file("support.jsonl", _clean(), team="T0ONE")
    body = view_submission_body(form, _values(file_id), user_id="U0ALICE", team_id="T0ONE")
    status, raw = server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))
    assert status == 200
    slack.answer_to_submission(form["id"], json.loads(raw))
    report = _settled(slack, form["id"])
    assert "support.jsonl* is ready" in json.dumps(report["blocks"])
    confirm = view_action_body(report, DATA_CONFIRM_ACTION, "start", user_id="U0ALICE", team_id="T0ONE")
    assert server.post("/slack/events", confirm, signed_headers(confirm, SIGNING_SECRET))[0] == 200
    [job] = wait_until(lambda: list(provider.jobs.values()), timeout=10)
    assert job["_account"] == KEY_ONE
    reads = [r for r in slack.file_reads if r["file"] == file_id]
    assert {r["kind"] for r in reads} == {"info", "download"} and {r["by"] for r in reads} == {("T0ONE", None)}
    provider.train(job["id"], 3, total=10)
    provider.set_status(job["id"], "succeeded")
    _command(server, slack, "help", team="T0TWO", channel="C0ONE", user="U0BOB")  # (shared: T0TWO spoke last)
    bot.services.poller.run_once()
    delivered(bot.services.sender)
    [chart] = wait_until(lambda: slack.uploads, timeout=30)
    assert chart["channel"] == "C0ONE" and chart["by"] == ("T0ONE", None)
    # Another workspace's install cannot read T0ONE's file (Slack: not found), whatever it asks.
    stranger = next(iter(g.tokens) for g in slack.grants if g.team_id == "T0TWO")
    assert slack._files_info({"file": file_id, "_token": stranger}) == {"ok": False, "error": "file_not_found"}
