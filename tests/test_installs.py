"""OAuth mode: "Add to Slack" installs in many workspaces (and org-wide), each posting with its own token, sealed at
rest; states that cannot be replayed; uninstalls; token rotation claimed once across replicas. The real slack_sdk
and Bolt against the Slack stand-in (bot/sandbox/slack_oauth.py), on the real HTTP server."""

from __future__ import annotations

import http.client
import json
import pathlib
import threading
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from cryptography.fernet import Fernet

from bot.cli import main as cli_main
from bot.config import ConfigError, load
from bot.installs import BOT_SCOPES
from bot.messages.blocks import Message
from bot.sandbox.slack import block_action_body, signed_headers, slash_command_body
from bot.sandbox.slack_oauth import CLIENT_ID, CLIENT_SECRET, event_body
from storage import Store
from tests.conftest import SIGNING_SECRET, Server, delivered, wait_until

ROOT = pathlib.Path(__file__).resolve().parent.parent
KEY = Fernet.generate_key().decode()


def oauth_changes(*keys: str, shared: frozenset[str] = frozenset({"*"})) -> dict:
    """An OAuth bot whose environment's provider keys serve every workspace (`shared`), unless told otherwise."""
    return {"slack_bot_token": None, "slack_client_id": CLIENT_ID, "slack_client_secret": CLIENT_SECRET,
            "encryption_keys": keys or (KEY,), "shared_keys_team_ids": shared}


@pytest.fixture
def oauth(make_bot):
    bot = make_bot(**oauth_changes())
    server = Server(bot)
    yield bot, server
    server.close()


def _get(server: Server, path: str) -> tuple[int, dict, str]:
    """A browser's GET, redirects not followed: (status, headers, body)."""
    conn = http.client.HTTPConnection(urlsplit(server.url).netloc, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
    finally:
        conn.close()


def _install(server: Server, slack, team_id: str | None, **grant) -> tuple[int, str]:
    """Click "Add to Slack", approve on Slack's page, come back: the redirect's status and page."""
    status, headers, _ = _get(server, "/slack/install")
    assert status == 302, status
    state = parse_qs(urlsplit(headers["location"]).query)["state"][0]
    code = slack.grant(team_id, **grant)
    status, _, page = _get(server, "/slack/oauth_redirect?" + urlencode({"code": code, "state": state}))
    return status, page


def _command(server: Server, text: str, *, team: str, channel: str, enterprise: str | None = None) -> dict:
    body = slash_command_body(text, channel_id=channel, team_id=team, enterprise_id=enterprise)
    status, raw = server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))
    assert status == 200, raw
    return json.loads(raw) if raw.strip().startswith(b"{") else {"text": raw.decode()}


def test_the_install_page_sends_to_slack_with_a_one_time_state_and_the_manifests_scopes(oauth, slack):
    _, server = oauth
    status, headers, _ = _get(server, "/slack/install")
    assert status == 302 and headers["cache-control"] == "no-store"
    location = urlsplit(headers["location"])
    assert location.netloc == urlsplit(slack.url).netloc and location.path == "/oauth/v2/authorize"
    query = parse_qs(location.query)
    assert query["client_id"] == [CLIENT_ID] and len(query["state"][0]) >= 32
    assert set(query["scope"][0].split(",")) == set(BOT_SCOPES)
    manifest = (ROOT / "manifest.yml").read_text()
    scopes = manifest.split("    bot:\n", 1)[1].split("settings:", 1)[0]
    assert {line.strip().lstrip("- ").split()[0] for line in scopes.splitlines() if line.strip()} == set(BOT_SCOPES)
    assert _get(server, "/slack/install")[1]["location"] != headers["location"]  # a state of its own each time


def test_two_workspaces_and_an_org_install_each_answer_and_post_with_their_own_token(oauth, slack, provider):
    bot, server = oauth
    for team in ("T0ONE", "T0TWO"):
        status, page = _install(server, slack, team)
        assert status == 200 and "Thank you" in page
    status, _ = _install(server, slack, None, enterprise_id="E0ORG", org_wide=True)
    assert status == 200
    assert {i["key"] for i in bot.services.store.workspaces.installations()} == {"T:T0ONE", "T:T0TWO", "E:E0ORG"}
    jobs = {}
    for team, channel, enterprise in (("T0ONE", "C0ONE", None), ("T0TWO", "C0TWO", None),
                                      ("T0ORGWS", "C0ORG", "E0ORG")):
        job = provider.add_job(status="running")
        jobs[channel] = job
        reply = _command(server, f"subscribe {job['id']}", team=team, channel=channel, enterprise=enterprise)
        assert "install" not in json.dumps(reply).lower()
    wait_until(lambda: all(bot.services.store.follows.followers(j["id"], "openai") for j in jobs.values()))
    for job in jobs.values():
        provider.set_status(job["id"], "succeeded")
    bot.services.poller.run_once()
    delivered(bot.services.sender)
    owners = {}
    for channel in jobs:
        posted = slack.outcomes_in(channel)
        assert posted, channel
        owners[channel] = {p["by"] for p in posted}
    assert owners == {"C0ONE": {("T0ONE", None)}, "C0TWO": {("T0TWO", None)}, "C0ORG": {(None, "E0ORG")}}
    assert slack.dead_token_calls == []


def test_a_workspace_that_has_not_installed_is_asked_to_and_nothing_happens(oauth, slack, provider):
    bot, server = oauth
    job = provider.add_job(status="running")
    reply = _command(server, f"subscribe {job['id']}", team="T0NONE", channel="C0NONE")
    assert "install" in json.dumps(reply).lower()
    time.sleep(0.3)
    assert bot.services.store.follows.followers(job["id"], "openai") == [] and slack.posted == []


def test_a_missing_forged_expired_or_reused_state_is_refused_and_nothing_is_stored(oauth, slack):
    bot, server = oauth
    code = slack.grant("T0ONE")
    bot.services.store.workspaces.issue_state("expired-state", ttl=-1)
    for query in ({"code": code}, {"code": code, "state": "forged"}, {"code": code, "state": "expired-state"}):
        status, _, page = _get(server, "/slack/oauth_redirect?" + urlencode(query))
        assert status == 400 and "expired or was already used" in page
    assert slack.exchanges == [] and bot.services.store.workspaces.installations() == []
    _, headers, _ = _get(server, "/slack/install")
    state = parse_qs(urlsplit(headers["location"]).query)["state"][0]
    assert _get(server, "/slack/oauth_redirect?" + urlencode({"code": code, "state": state}))[0] == 200
    replayed = _get(server, "/slack/oauth_redirect?" + urlencode({"code": slack.grant("T0TWO"), "state": state}))
    assert replayed[0] == 400 and len(slack.exchanges) == 1
    assert [i["key"] for i in bot.services.store.workspaces.installations()] == ["T:T0ONE"]
    # A code Slack will not take (used, made up) stores nothing and says so.
    _, headers, _ = _get(server, "/slack/install")
    state = parse_qs(urlsplit(headers["location"]).query)["state"][0]
    status, _, page = _get(server, "/slack/oauth_redirect?" + urlencode({"code": "made-up", "state": state}))
    assert status == 400 and "invalid_code" in page
    assert [i["key"] for i in bot.services.store.workspaces.installations()] == ["T:T0ONE"]


def test_tokens_are_sealed_at_rest_and_rotate_keys_reseals_them_under_the_new_key(oauth, slack, settings,
                                                                                 monkeypatch, capsys):
    bot, server = oauth
    assert _install(server, slack, "T0ONE")[0] == 200
    [token] = [t for g in slack.grants for t in g.tokens]
    bot.services.store.close()
    raw = b"".join(p.read_bytes() for p in pathlib.Path(settings.database_path).parent.glob("bot.db*"))
    assert token.encode() not in raw and b"xoxb-" not in raw
    new = Fernet.generate_key().decode()
    monkeypatch.setenv("DATABASE_PATH", settings.database_path)
    monkeypatch.setenv("ENCRYPTION_KEYS", f"{new},{KEY}")
    assert cli_main(["rotate-keys"]) == 0
    assert "resealed 1 stored secret under the first" in capsys.readouterr().out
    store = Store(settings.database_path)
    try:
        [row] = store.workspaces.installations()
        assert Fernet(new.encode()).decrypt(row["bot_token"].encode()).decode() == token  # the old key not needed
    finally:
        store.close()
    monkeypatch.setenv("ENCRYPTION_KEYS", Fernet.generate_key().decode())  # a key that opens nothing: no change
    assert cli_main(["rotate-keys"]) == 1
    assert "cannot be opened" in capsys.readouterr().err


def test_oauth_mode_refuses_to_start_without_encryption_keys():
    env = {"SLACK_CLIENT_ID": CLIENT_ID, "SLACK_CLIENT_SECRET": CLIENT_SECRET, "SLACK_SIGNING_SECRET": "s",
           "OPENAI_API_KEY": "sk-x"}
    with pytest.raises(ConfigError, match="ENCRYPTION_KEYS is not set"):
        load(env)
    with pytest.raises(ConfigError, match="key number 1 is not a Fernet key"):
        load({**env, "ENCRYPTION_KEYS": "not-a-key"})
    settings = load({**env, "ENCRYPTION_KEYS": KEY})
    assert settings.oauth and KEY in settings.secrets() and CLIENT_SECRET in settings.secrets()
    assert not load({**env, "ENCRYPTION_KEYS": KEY, "SLACK_BOT_TOKEN": "xoxb-1"}).oauth  # a token: one workspace


def test_an_uninstall_forgets_the_workspace_at_once_and_a_forged_one_changes_nothing(oauth, slack, provider):
    bot, server = oauth
    for team in ("T0ONE", "T0TWO"):
        _install(server, slack, team)
    jobs = {}
    for team, channel in (("T0ONE", "C0ONE"), ("T0TWO", "C0TWO")):
        jobs[channel] = provider.add_job(status="running")
        _command(server, f"subscribe {jobs[channel]['id']}", team=team, channel=channel)
    wait_until(lambda: all(bot.services.store.follows.followers(j["id"], "openai") for j in jobs.values()))
    delivered(bot.services.sender)  # (the cards: posted before the uninstall)
    forged = event_body({"type": "app_uninstalled"}, team_id="T0ONE")
    assert server.post("/slack/events", forged, {**signed_headers(forged, "not-the-secret"),
                                                 "content-type": "application/json"})[0] == 401
    assert len(bot.services.store.workspaces.installations()) == 2
    body = event_body({"type": "app_uninstalled"}, team_id="T0ONE")
    status, _ = server.post("/slack/events", body, {**signed_headers(body, SIGNING_SECRET),
                                                    "content-type": "application/json"})
    assert status == 200
    assert [i["key"] for i in bot.services.store.workspaces.installations()] == ["T:T0TWO"]
    slack.revoke(next(g for g in slack.grants if g.team_id == "T0ONE"))
    for job in jobs.values():
        provider.set_status(job["id"], "succeeded")
    bot.services.poller.run_once()
    delivered(bot.services.sender)
    assert slack.outcomes_in("C0TWO") and slack.outcomes_in("C0ONE") == []
    assert slack.dead_token_calls == []  # nothing was even tried with the uninstalled workspace's token
    assert bot.services.store.outbox.outcomes_waiting() == 0  # and nothing is left to retry for ever
    revoked = event_body({"type": "tokens_revoked", "tokens": {"bot": ["UFINETUNEBOT"]}}, team_id="T0TWO")
    server.post("/slack/events", revoked, {**signed_headers(revoked, SIGNING_SECRET),
                                           "content-type": "application/json"})
    assert bot.services.store.workspaces.installations() == []


@pytest.mark.heavy(9)
def test_a_rotating_token_is_refreshed_once_per_expiry_by_two_replicas_on_postgresql_and_never_used_dead(
        make_bot, slack, postgres_url):
    replicas = [make_bot(**oauth_changes(), database_url=postgres_url) for _ in range(2)]
    server = Server(replicas[0])
    try:
        assert _install(server, slack, "T0ROT", lifetime=3.0)[0] == 200
    finally:
        server.close()
    for bot in replicas:
        bot.services.installs.refresh_before = 1.5
        bot.services.store.workspaces.note_channel("C0ROT", "T:T0ROT")
    began, stop = time.monotonic(), threading.Event()
    failures = []

    def post(bot) -> None:
        while not stop.is_set():
            try:
                bot.services.slack.post("C0ROT", Message(text="tick"))
            except Exception as error:  # noqa: BLE001 - any failure is the test's finding
                failures.append(repr(error))
            time.sleep(0.05)

    threads = [threading.Thread(target=post, args=(bot,)) for bot in replicas for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(8)
    stop.set()
    for thread in threads:
        thread.join(10)
    elapsed = time.monotonic() - began
    [grant] = slack.grants
    assert failures == [] and slack.dead_token_calls == []
    assert [e for e in slack.exchanges if e.get("error")] == []  # no refresh token was ever spent twice
    # One refresh per expiry: a token lives 3 s and is refreshed once 1.5 s are left.
    assert 3 <= grant.refreshes <= elapsed / 1.5 + 1, (grant.refreshes, elapsed)
    assert len(slack.posted) > 100


def test_each_workspaces_home_is_published_with_its_own_token(oauth, slack, provider):
    bot, server = oauth
    for team in ("T0ONE", "T0TWO"):
        _install(server, slack, team)
    for team, user in (("T0ONE", "U0ONE"), ("T0TWO", "U0TWO")):
        body = event_body({"type": "app_home_opened", "user": user, "tab": "home"}, team_id=team)
        status, _ = server.post("/slack/events", body, {**signed_headers(body, SIGNING_SECRET),
                                                        "content-type": "application/json"})
        assert status == 200
    wait_until(lambda: len(slack.home_log) == 2, timeout=5)
    assert {(h["user_id"], h["by"]) for h in slack.home_log} == {("U0ONE", ("T0ONE", None)),
                                                                  ("U0TWO", ("T0TWO", None))}
    # Redrawn by the scheduler (no request under way): the person's workspace, as their requests showed it.
    # (the command, on a job of its own, is a request from the channel: were it on the started job, its follow,
    # done after the ack, could come first and leave the start's follow nothing to record, and no redraw owed)
    _command(server, f"subscribe {provider.add_job(status='running')['id']}", team="T0TWO", channel="C0TWO")
    job = provider.add_job(status="running")
    bot.services.store.follows.follow("C0TWO", {**job, "provider": "openai"}, final=False, team_id="T0TWO",
                                      user_id="U0TWO", origin="start")
    assert wait_until(lambda: bot.services.home.refresh_due() or slack.home_log[2:], timeout=5)
    assert [(h["user_id"], h["by"]) for h in slack.home_log[2:]] == [("U0TWO", ("T0TWO", None))]


def test_one_workspace_never_sees_follows_or_cancels_anothers_job(oauth, slack, provider):
    from bot.sandbox.files import SAMPLE_FILE_ID

    bot, server = oauth
    for team in ("T0ONE", "T0TWO"):
        _install(server, slack, team)
    ask_one = _command(server, f"start {SAMPLE_FILE_ID} suffix=ones", team="T0ONE", channel="C0ONE")
    assert "install" not in json.dumps(ask_one).lower()
    [job_id] = wait_until(lambda: list(provider.jobs), timeout=5)
    wait_until(lambda: bot.services.store.follows.followers(job_id, "openai"), timeout=5)
    responses = len(slack.responses)

    def later(text: str, team: str, channel: str) -> str:
        """A command answered after its ack (through the response URL), as the person sees it."""
        nonlocal responses
        body = slash_command_body(text, channel_id=channel, team_id=team, response_url=slack.response_url(text[:4]))
        status, raw = server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))
        assert status == 200, raw
        wait_until(lambda: len(slack.responses) > responses, timeout=5)
        responses = len(slack.responses)
        return json.dumps(slack.responses[-1], ensure_ascii=False)

    for text in (f"status {job_id}", f"cancel {job_id}", f"pause {job_id}", f"resume {job_id}",
                 f"subscribe {job_id}", f"events {job_id}", f"chart {job_id}", f"try {job_id} hello",
                 f"compare {job_id}", f"move {job_id} to=openai"):
        said = later(text, "T0TWO", "C0TWO")
        assert "knows a job called" in said, (text, said)
    # The card's buttons too: one of T0TWO's people, in a channel shared with T0ONE, presses Cancel and Refresh.
    delivered(bot.services.sender)
    [card] = slack.cards_in("C0ONE")
    for action in ("cancel_job", "refresh_job", "job_events"):
        [button] = [e for b in card["blocks"] if b["type"] == "actions" for e in b["elements"]
                    if e["action_id"] == action]
        body = block_action_body(action, button["value"], user_id="U0BOB", channel_id="C0ONE", team_id="T0TWO",
                                 response_url=slack.response_url(f"button-{action}"), message_ts=card["ts"])
        assert server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))[0] == 200
        [answer] = wait_until(lambda a=action: [r for r in slack.responses if r["url"].endswith(f"button-{a}")],
                              timeout=5)
        assert "knows a job called" in json.dumps(answer), (action, answer)
    responses = len(slack.responses)
    assert provider.jobs[job_id]["status"] != "cancelled"
    assert [f["channel_id"] for f in bot.services.store.follows.followers(job_id, "openai")] == ["C0ONE"]
    assert job_id not in later("list", "T0TWO", "C0TWO")
    assert job_id in later("list", "T0ONE", "C0ONE") and job_id in later(f"status {job_id}", "T0ONE", "C0ONE")


def test_a_form_opened_after_the_ack_uses_the_token_of_the_workspace_that_asked(oauth, slack):
    _, server = oauth
    for team in ("T0ONE", "T0TWO"):
        _install(server, slack, team)
    _command(server, "check", team="T0TWO", channel="C0TWO")  # the form opens on the pool, after the ack
    [opened] = wait_until(lambda: [v for v in slack.view_log if v["kind"] == "open"], timeout=5)
    assert opened["by"] == ("T0TWO", None)


def test_a_refresh_slack_refuses_leaves_the_still_valid_token_in_use(oauth, slack):
    bot, server = oauth
    _install(server, slack, "T0ONE", lifetime=60.0)
    [token] = [t for g in slack.grants for t in g.tokens]
    installs = bot.services.installs
    installs.refresh_before = 120  # due for a refresh now
    slack.fail("status", match="oauth.v2.access", status=500, times=5)
    assert installs.token_for("T:T0ONE") == token  # the refresh failed; the token it has still works
    [row] = bot.services.store.workspaces.installations()
    assert row["refresh_holder"] is None  # and the claim is given back for the next try
    assert installs.token_for("T:T0ONE") == token


def test_a_flood_of_the_install_page_cannot_fill_the_database(oauth):
    bot, server = oauth
    bot.services.installs.max_states = 3
    assert [_get(server, "/slack/install")[0] for _ in range(4)] == [302, 302, 302, 503]
    assert bot.services.store.workspaces.states_waiting() == 3


def test_a_request_never_waits_for_a_token_refresh_while_the_token_still_works(oauth, slack):
    """Authorizing happens before the ack: a token due for its refresh but still good is used at once, and the
    refresh runs on a thread of its own (here Slack holds it until the ack has been answered)."""
    bot, server = oauth
    _install(server, slack, "T0ONE", lifetime=60.0)
    bot.services.installs.refresh_before = 120  # due now, good for a minute
    held = slack.fail("delay", match="oauth.v2.access", delay=30)
    reply = _command(server, "help", team="T0ONE", channel="C0ONE")
    assert "/finetune" in json.dumps(reply)
    assert [e for e in slack.exchanges if e["grant_type"] == "refresh_token"] == []  # still held: the ack did not wait
    held.release()
    assert wait_until(lambda: [g.refreshes for g in slack.grants] == [1], timeout=5)


def test_a_single_workspace_database_keeps_working_when_the_same_bot_turns_oauth_on(make_bot, slack, provider):
    """Its rows belong to the workspace of its token: when that workspace installs the app, the jobs its channels
    followed become its own (polled with the keys it may use, announced with its new token), and no other
    workspace can see them."""
    before = make_bot()  # one workspace, one token: a channel follows a job
    job = provider.add_job(status="running")
    before.services.store.follows.follow("C0OLD", job, final=False, team_id="T0OLD", user_id="U0ALICE",
                                         origin="subscribe")
    bot = make_bot(**oauth_changes(shared=frozenset({"T0OLD"})))
    server = Server(bot)
    try:
        for team in ("T0OLD", "T0TWO"):
            assert _install(server, slack, team)[0] == 200
        owners = bot.services.store.workspaces.owners([("openai", job["id"])])
        assert owners == {("openai", job["id"]): "T:T0OLD"}
        body = slash_command_body(f"status {job['id']}", channel_id="C0TWO", team_id="T0TWO",
                                  response_url=slack.response_url("two"))
        assert server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))[0] == 200
        [answer] = wait_until(lambda: [r for r in slack.responses if r["url"].endswith("/two")], timeout=5)
        assert "running" not in json.dumps(answer) and job["id"] in json.dumps(answer)  # "no provider knows it"
        provider.set_status(job["id"], "succeeded")
        bot.services.poller.run_once()
        delivered(bot.services.sender)
        [posted] = slack.outcomes_in("C0OLD")
        assert posted["by"] == ("T0OLD", None)
    finally:
        server.close()


def test_an_org_wide_install_adopts_what_its_workspaces_followed_and_those_that_approve_it_later(make_bot, slack,
                                                                                                provider):
    """A one-token bot's rows belong to the workspaces of its org when the org installs the app org-wide: those that
    approved it at install (Slack's `auth.teams.list`, every page read), and those that approve it later
    (`team_access_granted`, signed like every event). A workspace outside the org never gets them."""
    before = make_bot()
    jobs = {team: provider.add_job(status="running") for team in ("T0ALPHA", "T0BETA", "T0OUTSIDE")}
    for team, job in jobs.items():
        before.services.store.follows.follow(f"C{team}", job, final=False, team_id=team, user_id="U0ALICE",
                                             origin="subscribe")
    bot = make_bot(**oauth_changes(shared=frozenset({"E0ORG"})))
    server = Server(bot)
    store = bot.services.store.workspaces

    def owner(team: str) -> str | None:
        return store.owners([("openai", jobs[team]["id"])]).get(("openai", jobs[team]["id"]))

    try:
        approved = tuple(f"T0MANY{n}" for n in range(1500)) + ("T0ALPHA",)  # the last on the second page
        status, _ = _install(server, slack, None, enterprise_id="E0ORG", org_wide=True, teams=approved)
        assert status == 200
        assert [owner(t) for t in jobs] == ["E:E0ORG", None, None]
        for forged in (True, False):
            body = event_body({"type": "team_access_granted", "team_ids": ["T0BETA"]}, team_id=None,
                              enterprise_id="E0ORG", org_wide=True)
            secret = "not-the-secret" if forged else SIGNING_SECRET
            assert server.post("/slack/events", body, {**signed_headers(body, secret),
                                                       "content-type": "application/json"})[0] == (401 if forged
                                                                                                   else 200)
            assert owner("T0BETA") is None if forged else wait_until(lambda: owner("T0BETA"), timeout=5)
        assert [owner(t) for t in jobs] == ["E:E0ORG", "E:E0ORG", None]
        for job in jobs.values():
            provider.set_status(job["id"], "succeeded")
        bot.services.poller.run_once()
        delivered(bot.services.sender)
        assert [p["by"] for p in slack.outcomes_in("CT0ALPHA") + slack.outcomes_in("CT0BETA")] == [
            (None, "E0ORG"), (None, "E0ORG")]
        assert slack.outcomes_in("CT0OUTSIDE") == []  # no installation serves it: nothing posted with a wrong token
    finally:
        server.close()


def test_a_slack_connect_channel_hears_each_workspaces_jobs_with_that_workspaces_own_token(oauth, slack, provider):
    """One channel shared by two installed workspaces: each job's card, its edits and its outcome go with the token of
    the workspace that owns the job (a message is edited only by the install that posted it), whichever workspace
    spoke in the channel last; one workspace uninstalling stops only its own posts there."""
    bot, server = oauth
    for team in ("T0ONE", "T0TWO"):
        _install(server, slack, team)
    jobs = {}
    for team in ("T0ONE", "T0TWO"):
        jobs[team] = provider.add_job(status="running")
        _command(server, f"subscribe {jobs[team]['id']}", team=team, channel="C0SHARED")
    wait_until(lambda: all(bot.services.store.follows.followers(j["id"], "openai") for j in jobs.values()))
    _command(server, "help", team="T0TWO", channel="C0SHARED")  # (the channel last heard from T0TWO)
    delivered(bot.services.sender)
    cards = {p["ts"]: p["by"] for p in slack.posted if p["channel"] == "C0SHARED"}
    assert sorted(cards.values()) == [("T0ONE", None), ("T0TWO", None)]
    for job in jobs.values():
        provider.set_status(job["id"], "validating_files")  # (a state change: each card is edited)
    bot.services.poller.run_once()
    delivered(bot.services.sender)
    edited = [u for u in slack.updates if u["channel"] == "C0SHARED"]
    assert len(edited) >= 2 and all(u["ts"] in cards for u in edited)  # every edit made, by the card's author
    # One workspace's member cannot end the channel's follow of the other's job there.
    said = _command(server, f"unsubscribe {jobs['T0ONE']['id']}", team="T0TWO", channel="C0SHARED")
    assert [f["channel_id"] for f in bot.services.store.follows.followers(jobs["T0ONE"]["id"], "openai")] == [
        "C0SHARED"], said
    for job in jobs.values():
        provider.set_status(job["id"], "succeeded")
    body = event_body({"type": "app_uninstalled"}, team_id="T0TWO")
    assert server.post("/slack/events", body, {**signed_headers(body, SIGNING_SECRET),
                                               "content-type": "application/json"})[0] == 200
    slack.revoke(next(g for g in slack.grants if g.team_id == "T0TWO"))
    bot.services.poller.run_once()
    delivered(bot.services.sender)
    [outcome] = slack.outcomes_in("C0SHARED")
    assert jobs["T0ONE"]["id"] in outcome["text"] and outcome["by"] == ("T0ONE", None)
    assert slack.dead_token_calls == []


@pytest.fixture
def oauth_on_both(make_bot, database):
    """`oauth`, on SQLite and on PostgreSQL."""
    where = {"database_url": database} if database.startswith("postgresql") else {"database_path": database}
    bot = make_bot(**oauth_changes(), **where)
    server = Server(bot)
    yield bot, server
    server.close()


def test_a_slack_connect_channel_keeps_each_workspaces_settings_budget_spend_and_follows_apart(oauth_on_both,
                                                                                              slack, provider):
    """One channel, two installed workspaces: each sets its own budget there, sees only its own jobs' spend and
    follows, and a start is held by its own workspace's budget only. What the channel had before OAuth was on
    ('') is each workspace's until it changes its own. On either engine."""
    from bot.keyring import acting_for
    from bot.sandbox.files import SAMPLE_FILE_ID

    bot, server = oauth_on_both
    store = bot.services.store
    for team in ("T0ONE", "T0TWO"):
        _install(server, slack, team)
    store.channels.set_channel_settings("C0SHARED", "U0OLD", mentions=False)  # (from before OAuth: '')
    asked = {"n": len(slack.responses)}

    def said(text: str, team: str) -> str:
        body = slash_command_body(text, channel_id="C0SHARED", team_id=team, user_id=f"U{team}",
                                  response_url=slack.response_url(f"{team}-{asked['n']}"))
        status, raw = server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))
        assert status == 200, raw
        url = f"/{team}-{asked['n']}"
        asked["n"] += 1
        found = wait_until(lambda: [r for r in slack.responses if r["url"].endswith(url)], timeout=10)
        return json.dumps(found[-1]) + raw.decode()

    said("settings budget=40", "T0ONE")
    with acting_for("T:T0ONE"):
        one = store.channels.channel_settings("C0SHARED")
    with acting_for("T:T0TWO"):
        two = store.channels.channel_settings("C0SHARED")
    assert (one["budget"], one["mentions"]) == (40.0, 0) and (two["budget"], two["mentions"]) == (None, 0)
    for team in ("T0ONE", "T0TWO"):
        said(f"start {SAMPLE_FILE_ID} suffix={team.lower()}", team)
    jobs = wait_until(lambda: len(provider.jobs) == 2 and dict(store.workspaces.owners(
        [("openai", j) for j in provider.jobs])), timeout=10)
    mine = {owner: job_id for (_, job_id), owner in jobs.items()}
    for team, other in (("T0ONE", "T0TWO"), ("T0TWO", "T0ONE")):
        for command in ("spend", "subscriptions"):
            answer = said(command, team)
            assert mine[f"T:{team}"] in answer and mine[f"T:{other}"] not in answer, (team, command, answer)
    committed = {}
    for team in ("T0ONE", "T0TWO"):
        with acting_for(f"T:{team}"):
            committed[team] = store.spend.committed_now("C0SHARED", 0, 2e10)
            assert committed[team] == store.spend.month_totals("C0SHARED", 0, 2e10)["spent"] > 0
    with acting_for("T:T0TWO"):  # a start of T0TWO's under way reserves from T0TWO's budget only
        store.replays.record_intent("req-two", team_id="T0TWO", channel_id="C0SHARED", user_id="UT0TWO",
                                    response_url=None, training_file=SAMPLE_FILE_ID, model="m", suffix=None,
                                    provider="openai", estimate=100.0)
        assert store.spend.committed_now("C0SHARED", 0, 2e10) == committed["T0TWO"] + 100.0
    with acting_for("T:T0ONE"):
        assert store.spend.committed_now("C0SHARED", 0, 2e10) == committed["T0ONE"]
    store.replays.finish_intent("req-two", job_id=None, state="never_started")
    said("settings budget=0.01", "T0ONE")  # (below what T0ONE's own job committed: its next start is refused)
    said(f"start {SAMPLE_FILE_ID} suffix=again", "T0TWO")  # (T0TWO has no budget here: its start goes ahead)
    assert wait_until(lambda: len(provider.jobs) == 3, timeout=10)
    refused = said(f"start {SAMPLE_FILE_ID} suffix=over", "T0ONE")
    assert "budget" in refused.lower() and len(provider.jobs) == 3


def test_each_workspace_is_told_to_invite_the_app_by_the_name_its_own_install_gave_it(oauth, slack, provider):
    """A private channel the bot is not in: the answer names the bot user of that channel's workspace (each install
    has its own), never another workspace's."""
    from bot.sandbox.slack_oauth import bot_user_of

    bot, server = oauth
    for team in ("T0ONE", "T0TWO"):
        assert _install(server, slack, team)[0] == 200
    slack.invisible_channels.add("G0PRIVTWO")
    job = provider.add_job(status="running")
    body = slash_command_body(f"subscribe {job['id']}", channel_id="G0PRIVTWO", team_id="T0TWO",
                              response_url=slack.response_url("priv"))
    assert server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))[0] == 200
    [reply] = wait_until(lambda: [r for r in slack.responses if r["url"].endswith("/priv")], timeout=5)
    two, one = (bot_user_of(next(g for g in slack.grants if g.team_id == t)) for t in ("T0TWO", "T0ONE"))
    assert f"<@{two}>" in json.dumps(reply) and f"<@{one}>" not in json.dumps(reply)
