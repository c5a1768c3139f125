"""Moving a fine-tune to another provider (`/finetune move`), judging the move (`compare` of two fine-tunes), and the
fine-tunes a date puts at risk (`retiring`, the notices): the real SDKs against the loopback stand-ins, signed
requests through the real HTTP server, a real database."""

from __future__ import annotations

import html
import json
import threading
from dataclasses import replace

import pytest

from bot.app import build
from bot.commands import Command
from bot.conversion import Conversion, NotMovable
from bot.jobs import Caller
from bot.messages.jobs import COMPARE_ORIGINAL_ACTION
from bot.move_messages import MOVE_OPEN_ACTION, MOVE_PICK_ACTION
from bot.providers.shape import CHAT, CHAT_TOOLS, COMPLETION
from bot.sandbox.openai import FineTuningSandbox
from bot.sandbox.slack import block_action_body, signed_headers, view_action_body
from tests.conftest import SIGNING_SECRET, Server, ask, delivered, everything_said, wait_until

MINI = "gpt-4.1-mini-2025-04-14"
LLAMA_8B = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
FIREWORKS_8B = "accounts/fireworks/models/llama-v3p1-8b-instruct"
CALLER = Caller("T0TEAM", "C0GENERAL", "U0ALICE")


def _examples(n: int = 12, *, weight: bool = False) -> bytes:
    lines = []
    for i in range(n):
        answer = {"role": "assistant", "content": f"Answer {i}.", **({"weight": i % 2} if weight else {})}
        lines.append(json.dumps({"messages": [{"role": "system", "content": "Be brief."},
                                              {"role": "user", "content": f"Question {i}?"}, answer]}))
    return ("\n".join(lines) + "\n").encode()


def _posts(stand_in, path: str) -> list:
    """The POSTs to exactly this path (a create, an upload), not to the paths below it."""
    return [r for r in stand_in.received if r.method == "POST" and r.path.rstrip("/") == path]


def _parsed(content: bytes) -> list[dict]:
    return [json.loads(line) for line in content.splitlines() if line.strip()]


@pytest.fixture
def movers(three, slack):
    """A bot with OpenAI's shape, Together AI and Fireworks AI configured, behind the real HTTP server."""
    bot = build(three)
    server = Server(bot)
    yield bot, server
    server.close()
    bot.stop(timeout=2)


def _succeeded_openai_job(provider, content: bytes | None = None, **fields) -> dict:
    if content is not None:
        provider.add_file("file-moveme", "moveme.jsonl", content)
    job = provider.add_job(status="succeeded", **fields)
    if content is not None:
        with provider.lock:
            provider.jobs[job["id"]]["training_file"] = "file-moveme"
    with provider.lock:
        provider.jobs[job["id"]]["hyperparameters"]["n_epochs"] = 4
        provider.jobs[job["id"]]["method"] = {"type": "supervised",
                                              "supervised": {"hyperparameters": {"n_epochs": 4}}}
        provider.jobs[job["id"]]["suffix"] = "support"
    return provider.jobs[job["id"]]


def test_an_openai_fine_tune_moves_to_together_in_one_command(movers, slack, provider, together):
    bot, server = movers
    job = _succeeded_openai_job(provider, _examples())
    held_out = b"".join(reversed(_examples(3).splitlines(keepends=True)))
    provider.add_file("file-heldout", "heldout.jsonl", held_out)
    with provider.lock:
        provider.jobs[job["id"]]["validation_file"] = "file-heldout"
    before = len(together.files)
    reply = ask(server, slack, f"move {job['id']} to=together")
    said = everything_said(reply)
    assert "Moving" in said and "Together AI" in said and LLAMA_8B in said, said
    assert "Epochs: 4, as" in said and "learning rate is not carried over" in said
    [created] = _posts(together, "/v1/fine-tunes")
    body = created.json()
    assert body["model"] == LLAMA_8B and body["n_epochs"] == 4 and body["suffix"] == "support"
    [uploaded] = [f for fid, f in together.files.items() if fid == body["training_file"]]
    assert len(together.files) == before + 2
    assert _parsed(uploaded["_content"]) == _parsed(_examples())  # the same examples, read as examples
    assert _parsed(together.files[body["validation_file"]]["_content"]) == _parsed(held_out)
    new_job = next(j for j in together.jobs.values() if j["training_file"] == body["training_file"])
    follows = bot.services.store.follows.followers(new_job["id"], "together")
    assert [f["channel_id"] for f in follows] == ["C0GENERAL"] and follows[0]["origin"] == "start"
    assert bot.services.store.moves.moved_from("together", new_job["id"])["source_job"] == job["id"]


def test_to_fireworks_the_weights_go_and_the_move_says_so(movers, slack, provider, fireworks):
    bot, server = movers
    job = _succeeded_openai_job(provider, _examples(weight=True))
    said = everything_said(ask(server, slack, f"move {job['id']} to=fireworks"))
    assert FIREWORKS_8B in said and "`weight` removed from 12 message(s)" in said and "6 had weight 0" in said
    [created] = fireworks.requests_to("supervisedFineTuningJobs", "POST")
    body = created.json()
    assert body["baseModel"] == FIREWORKS_8B and body["epochs"] == 4
    dataset = fireworks.files[body["dataset"].rsplit("/", 1)[-1]]
    expected = _parsed(_examples(weight=True))
    for example in expected:
        for message in example["messages"]:
            message.pop("weight", None)
    assert _parsed(dataset["_content"]) == expected


def test_together_to_fireworks_keeps_the_family(movers, slack, together, fireworks):
    bot, server = movers
    together.add_file("file-tmove", "t.jsonl", _examples())
    job = together.add_job(status="completed", model="meta-llama/Meta-Llama-3.1-70B-Instruct-Reference",
                           training_file="file-tmove", n_epochs=2)
    said = everything_said(ask(server, slack, f"move {job['id']} to=fireworks"))
    assert "the same model: Llama 3.1 70B Instruct" in said, said
    [created] = fireworks.requests_to("supervisedFineTuningJobs", "POST")
    assert created.json()["baseModel"].endswith("llama-v3p1-70b-instruct") and created.json()["epochs"] == 2
    dataset = fireworks.files[created.json()["dataset"].rsplit("/", 1)[-1]]
    assert _parsed(dataset["_content"]) == _parsed(_examples())


def test_openai_to_azure_keeps_the_base_model(settings, slack, provider):
    with FineTuningSandbox(azure=True) as azure:
        bot = build(replace(settings, env={**settings.env, "AZURE_OPENAI_ENDPOINT": azure.url,
                                           "AZURE_OPENAI_API_KEY": "azure-key", "OPENAI_API_VERSION": "2024-10-21"}))
        try:
            job = _succeeded_openai_job(provider, _examples())
            message = bot.services.moves.run(Command("move", {"job_id": job["id"], "to": "azure"}), CALLER)
            assert "the same base model" in message.text or "Started" in message.text, message.text
            [created] = azure.requests_to("/fine_tuning/jobs", "POST")
            assert created.json()["model"] == MINI and created.json()["suffix"] == "support"
            uploaded = azure.files[created.json()["training_file"]]
            assert _parsed(uploaded["_content"]) == _parsed(_examples())
        finally:
            bot.stop(timeout=2)


def test_bad_input_gets_a_clear_answer_and_no_request_anywhere(movers, slack, provider, together, fireworks):
    bot, server = movers
    job = _succeeded_openai_job(provider, _examples())
    bot.services.store.follows.follow("C0GENERAL", {"id": job["id"], "provider": "openai", "status": "succeeded",
                                                    "model": MINI}, final=True, team_id="T", user_id="U",
                                      origin="subscribe")
    counts = [len(s.received) for s in (provider, together, fireworks)]
    cases = {
        f"move {job['id']} to=nowhere": "`to=` takes `openai`, `together`, `fireworks`",
        f"move {job['id']} to=openai": "is already at OpenAI",
        f"move {job['id']} to=together suffix={'s' * 60}": "at most 40 characters",
        f"move {job['id']}": "needs `to=<provider>`",
        f"move {job['id']} to=together lora=true": "has no option `lora`",
    }
    for text, expected in cases.items():
        said = html.unescape(everything_said(ask(server, slack, text)))
        if expected:
            assert expected in said, (text, said)
    assert [len(s.received) for s in (provider, together, fireworks)][1:] == counts[1:]
    assert len(provider.received) == counts[0]  # (the job's provider was known: nothing asked of it either)


def test_an_unknown_job_is_answered_in_the_providers_words(movers, slack):
    bot, server = movers
    said = everything_said(ask(server, slack, "move ftjob-doesnotexist to=together"))
    assert "Could not move ftjob-doesnotexist" in said or "Could not find" in said, said


def test_no_mapping_and_no_model_lists_the_targets_models_and_uploads_nothing(movers, slack, provider, together):
    bot, server = movers
    job = _succeeded_openai_job(provider, _examples(), model="davinci-002")
    before = len(together.files)
    said = everything_said(ask(server, slack, f"move {job['id']} to=together"))
    assert "I know no base model at Together AI near davinci-002" in said and LLAMA_8B in said
    assert len(together.files) == before and not _posts(together, "/v1/fine-tunes")
    assert bot.services.store.moves.moved_to("openai", job["id"]) == []


def test_a_target_refusing_the_create_answers_in_its_words_and_the_move_may_be_tried_again(movers, slack, provider,
                                                                                           together):
    bot, server = movers
    job = _succeeded_openai_job(provider, _examples())
    said = everything_said(ask(server, slack, f"move {job['id']} to=together model=unknown/model-x"))
    assert "unknown/model-x" in said and ("not" in said.lower()), said
    assert not [j for j in together.jobs.values() if j.get("model") == "unknown/model-x"]
    said = everything_said(ask(server, slack, f"move {job['id']} to=together"))
    assert LLAMA_8B in said and "Started" in said, said


def test_a_second_move_of_the_same_content_reuses_the_upload(movers, slack, provider, together):
    bot, server = movers
    first = _succeeded_openai_job(provider, _examples())
    second = _succeeded_openai_job(provider, None)
    with provider.lock:
        provider.jobs[second["id"]]["training_file"] = "file-moveme"
    ask(server, slack, f"move {first['id']} to=together")
    uploads = len(_posts(together, "/v1/files"))
    said = everything_said(ask(server, slack, f"move {second['id']} to=together"))
    assert "Reused the file" in said and len(_posts(together, "/v1/files")) == uploads


def test_moving_again_answers_with_the_job_it_made(movers, slack, provider, together):
    bot, server = movers
    job = _succeeded_openai_job(provider, _examples())
    ask(server, slack, f"move {job['id']} to=together")
    said = everything_said(ask(server, slack, f"move {job['id']} to=together"))
    assert "was already moved to Together AI" in said
    assert len(_posts(together, "/v1/fine-tunes")) == 1


def test_double_clicks_at_once_make_one_upload_and_one_job(movers, provider, together):
    bot, _ = movers
    _moved_at_once(_succeeded_openai_job(provider, _examples()), [bot] * 6)
    assert len(_posts(together, "/v1/fine-tunes")) == 1
    assert len(_posts(together, "/v1/files")) == 1


def _moved_at_once(job: dict, bots: list) -> None:
    """The same move asked of each bot at once (clicks, processes), each answered."""
    answers = []
    threads = [threading.Thread(target=lambda b=b: answers.append(b.services.moves.run(
        Command("move", {"job_id": job["id"], "to": "together"}), CALLER))) for b in bots]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(answers) == len(bots)


def test_two_processes_on_one_database_move_once(three, database, provider, together):
    location = {"database_url": database} if "://" in database else {"database_path": database}
    first, second = (build(replace(three, **location)) for _ in range(2))
    try:
        _moved_at_once(_succeeded_openai_job(provider, _examples()), [first, second] * 3)
        assert len(_posts(together, "/v1/fine-tunes")) == 1
        assert len(_posts(together, "/v1/files")) == 1
    finally:
        first.stop(timeout=2)
        second.stop(timeout=2)


def test_a_file_the_provider_keeps_is_asked_for_and_nothing_starts_without_it(movers, slack, provider, together):
    bot, server = movers
    job = _succeeded_openai_job(provider, _examples())
    provider.withhold("file-moveme")
    reply = ask(server, slack, f"move {job['id']} to=together suffix=kept")
    said = everything_said(reply)
    assert "Not allowed to download files of purpose: fine-tune" in said and "Pick the file in Slack" in said
    assert "suffix=kept" in said and "Nothing was uploaded or started" in said
    [button] = [e for b in reply["blocks"] for e in b.get("elements") or () if e.get("action_id") == MOVE_PICK_ACTION]
    assert not _posts(together, "/v1/fine-tunes") and not _posts(together, "/v1/files")
    move = bot.services.store.moves.moved_to("openai", job["id"])
    assert move == []
    # The button opens the training-data form for the target, filled in with what the move kept.
    body = _click(MOVE_PICK_ACTION, button["value"])
    status, _ = server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))
    assert status == 200
    opened = wait_until(lambda: [v for v in slack.view_log if v["kind"] == "open"])
    view = slack.views[opened[-1]["view_id"]]
    shown = json.dumps(view["blocks"])
    assert "Moving " + job["id"] in shown and '"initial_value": "kept"' in shown and "Together AI" in shown


def test_the_form_the_pick_button_opens_goes_on_with_the_move_once(movers, slack, provider, together):
    from bot.views import DATA_CONFIRM_ACTION
    from tests.test_data_flow import _post, _settled, _submit, _values

    bot, server = movers
    job = _succeeded_openai_job(provider, _examples())
    provider.withhold("file-moveme")
    reply = ask(server, slack, f"move {job['id']} to=together")
    [button] = [e for b in reply["blocks"] for e in b.get("elements") or () if e.get("action_id") == MOVE_PICK_ACTION]
    forms = []
    for _ in range(2):  # two clicks, two forms (say, two browser tabs): the move goes on from one of them
        body = _click(MOVE_PICK_ACTION, button["value"])
        server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))
        opened = wait_until(lambda n=len(forms): len(found := [v for v in slack.view_log if v["kind"] == "open"]) > n
                            and found)
        forms.append(slack.views[opened[-1]["view_id"]])
    file_id = slack.add_file("picked.jsonl", _examples())
    reports = []
    for form in forms:
        _submit(server, slack, form, _values(file_id, model=LLAMA_8B))
        reports.append(_settled(slack, form["id"]))
    for report in reports:
        _post(server, view_action_body(report, DATA_CONFIRM_ACTION, "start"))
    new = wait_until(lambda: bot.services.store.moves.moved_to("openai", job["id"]), timeout=10)
    assert new and new[0]["target_provider"] == "together"
    assert wait_until(lambda: any("already went on" in json.dumps(slack.views[f["id"]]["blocks"]) for f in forms),
                      timeout=10)
    assert len(_posts(together, "/v1/fine-tunes")) == 1 and len(_posts(together, "/v1/files")) == 1


def test_a_held_move_starts_once_when_released_and_is_linked(movers, slack, provider, together):
    bot, server = movers
    ask(server, slack, "settings confirm_above=0")
    job = _succeeded_openai_job(provider, _examples())
    reply = ask(server, slack, f"move {job['id']} to=together")
    said = everything_said(reply)
    assert "I held this start" in said and "move=" not in said
    assert not _posts(together, "/v1/fine-tunes")
    [button] = [e for b in reply["blocks"] for e in b.get("elements") or () if e.get("action_id") == "hold_start"]
    hold_id = button["value"]
    for _ in range(3):
        answer, _ = bot.services.jobs.release(CALLER, hold_id, "start")
    assert len(_posts(together, "/v1/fine-tunes")) == 1
    [moved] = bot.services.store.moves.moved_to("openai", job["id"])
    assert moved["new_job"] in {j["id"] for j in together.jobs.values()}


def test_links_both_ways_and_the_followers_come_along(movers, slack, provider, together):
    bot, server = movers
    job = _succeeded_openai_job(provider, _examples())
    provider.set_status(job["id"], "running")  # followed (with a card) while it ran, then succeeded
    ask(server, slack, f"subscribe {job['id']}", channel="C0OTHER")
    assert wait_until(lambda: slack.cards_in("C0OTHER"))  # (its card up while it runs)
    provider.set_status(job["id"], "succeeded")
    bot.services.poller.run_once()
    delivered(bot.services.sender)
    [card] = slack.cards_in("C0OTHER")
    ask(server, slack, f"move {job['id']} to=together")
    [moved] = bot.services.store.moves.moved_to("openai", job["id"])
    new_id = moved["new_job"]
    assert "Moved from `" + job["id"] + "` at OpenAI" in everything_said(ask(server, slack, f"status {new_id}"))
    source_status = everything_said(ask(server, slack, f"status {job['id']}"))
    assert "Moved to `" + new_id + "` at Together AI" in source_status
    followers = {f["channel_id"] for f in bot.services.store.follows.followers(new_id, "together")}
    assert followers == {"C0GENERAL", "C0OTHER"}
    # The original's card in C0OTHER is redrawn to say where it went, then again as the new job's state changes.
    def card_says(words: str) -> bool:
        delivered(bot.services.sender)
        edits = [u for u in slack.updates if u["channel"] == "C0OTHER" and u["ts"] == card["ts"]]
        return bool(edits) and words in json.dumps(edits[-1], ensure_ascii=False)

    assert wait_until(lambda: card_says(f"Moved to `{new_id}` at Together AI (:hourglass_flowing_sand: pending)"),
                      timeout=10)
    together.set_status(new_id, "running")
    bot.services.poller.run_once()
    assert wait_until(lambda: card_says(f"Moved to `{new_id}` at Together AI (:gear: running)"), timeout=10)


def test_the_moved_success_offers_compare_with_the_original_which_compares_two_fine_tunes(movers, slack, provider,
                                                                                           together):
    bot, server = movers
    job = _succeeded_openai_job(provider, _examples(), validation_file="file-sample")
    ask(server, slack, f"move {job['id']} to=together")
    [moved] = bot.services.store.moves.moved_to("openai", job["id"])
    together.set_status(moved["new_job"], "completed")
    bot.services.poller.run_once()

    def success_posted() -> list[dict]:
        # (a delivery the cycle kicked may hold the sender's lock: a call then leaves the post to it)
        delivered(bot.services.sender)
        return [m for m in slack.messages_in("C0GENERAL") if "succeeded" in m.get("text", "")]

    posted = wait_until(success_posted, timeout=10)
    assert posted, slack.messages_in("C0GENERAL")
    [button] = [e for m in posted for b in m.get("blocks") or () for e in b.get("elements") or ()
                if e.get("action_id") == COMPARE_ORIGINAL_ACTION]
    body = _click(COMPARE_ORIGINAL_ACTION, button["value"], ts=posted[-1]["ts"], thread_ts=posted[-1]["thread_ts"])
    server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))
    compared = wait_until(lambda: [m for m in slack.messages_in("C0GENERAL") if "Compared" in m.get("text", "")],
                          timeout=10)
    assert compared, slack.messages_in("C0GENERAL")
    said = everything_said(compared[-1])
    assert "Two fine-tunes compared" in said and job["id"] in said and moved["new_job"] in said
    assert compared[-1]["thread_ts"] == posted[-1]["thread_ts"]  # in the moved job's card's thread


def test_compare_of_two_job_ids_asks_each_model_at_its_own_provider(movers, slack, provider, together):
    bot, server = movers
    first = provider.add_job(status="succeeded", validation_file="file-sample")
    together.add_file("file-t2", "t.jsonl", _examples())
    second = together.add_job(status="completed", training_file="file-t2")
    said = everything_said(ask(server, slack, f"compare {first['id']} {second['id']} n=2"))
    assert "Two fine-tunes compared" in said and "2 examples" in said, said
    assert len(provider.requests_to("/chat/completions", "POST")) == 2
    assert len(together.requests_to("/v1/chat/completions", "POST")) == 2


def test_a_preference_fine_tune_is_not_moved(movers, slack, provider, together):
    bot, server = movers
    pair = json.dumps({"input": {"messages": [{"role": "user", "content": "hi"}]},
                       "preferred_output": [{"role": "assistant", "content": "hello"}],
                       "non_preferred_output": [{"role": "assistant", "content": "go away"}]})
    job = _succeeded_openai_job(provider, ((pair + "\n") * 12).encode())
    said = everything_said(ask(server, slack, f"move {job['id']} to=together"))
    assert "preference pairs" in said and not _posts(together, "/v1/files")


def test_data_the_target_refuses_is_reported_and_nothing_is_uploaded(movers, slack, provider, fireworks):
    bot, server = movers
    job = _succeeded_openai_job(provider, _examples(3))  # fewer than most providers take… and Fireworks says so
    bad = json.dumps({"messages": [{"role": "robot", "content": "x"}]})
    provider.add_file("file-bad", "bad.jsonl", (bad + "\n").encode() * 12)
    with provider.lock:
        provider.jobs[job["id"]]["training_file"] = "file-bad"
    said = everything_said(ask(server, slack, f"move {job['id']} to=fireworks"))
    assert "doesn't meet Fireworks AI's rules" in said and "unknown role" in said, said
    assert not fireworks.requests_to("datasets", "POST")


# -- conversions, as pure functions ---------------------------------------------------------------------------------


def test_prompt_completion_becomes_chat_where_the_target_takes_only_chat():
    conversion = Conversion(frozenset({CHAT, CHAT_TOOLS}), message_keys=frozenset({"role", "content"}))
    line = conversion.line(b'{"prompt": "2+2?", "completion": "4"}')
    assert json.loads(line) == {"messages": [{"role": "user", "content": "2+2?"},
                                             {"role": "assistant", "content": "4"}]}
    assert "rewritten as chat" in conversion.changes()[0]
    keeps = Conversion(frozenset({CHAT, COMPLETION}))
    assert keeps.line(b'{"prompt": "a", "completion": "b"}') == b'{"prompt": "a", "completion": "b"}'
    assert keeps.changes() == []


def test_lines_it_need_not_change_are_kept_byte_for_byte():
    conversion = Conversion(frozenset({CHAT}), message_keys=frozenset({"role", "content"}))
    raw = '{"messages":[{"role":"user","content":"é"},{"role":"assistant","content":"x"}]}'.encode()
    assert conversion.line(raw) == raw and conversion.line(b"not json") == b"not json"
    with pytest.raises(NotMovable):
        conversion.line(b'{"input": {}, "preferred_output": [], "non_preferred_output": []}')


def _click(action_id: str, value: str, *, ts: str | None = None, thread_ts: str | None = None) -> str:
    """A button clicked on a message (in a thread, when `thread_ts`), as Slack sends it."""
    from urllib.parse import parse_qs, urlencode

    body = block_action_body(action_id, value, message_ts=ts or "1.000001")
    payload = json.loads(parse_qs(body)["payload"][0])
    if thread_ts:
        payload["container"]["thread_ts"] = thread_ts
        payload["message"] = {"ts": ts, "thread_ts": thread_ts}
    return urlencode({"payload": json.dumps(payload)})


# -- fine-tunes at risk: the list, its Move… form, and the notices before each date ----------------------------------


def _day(text: str) -> float:
    from datetime import datetime, timezone

    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def _openai_as_itself(settings, clock):
    """OpenAI's shape as OpenAI's own API is configured (the dates are OpenAI's), pointed at the stand-in."""
    from bot.providers import registry

    return registry.configured(replace(settings, sandbox=True), clock=clock)


@pytest.fixture
def dated(three, slack):
    """Bots on one database at a day of the test's choosing, with OpenAI's dates, Together and Fireworks."""
    today = {"at": _day("2026-12-10T12:00:00")}
    made = []

    def make():
        clock = lambda: today["at"]  # noqa: E731
        bot = build(three, providers=_openai_as_itself(three, clock))
        bot.services.moves.clock = clock  # (the day; everything else keeps time as usual)
        made.append(bot)
        return bot

    yield make, today
    for bot in made:
        bot.stop(timeout=2)


def _follow(bot, job: dict, provider: str, channel: str = "C0GENERAL") -> None:
    bot.services.store.follows.follow(channel, {"id": job["id"], "provider": provider, "status": job["status"],
                                                "state": "succeeded", "model": job["model"],
                                                "fine_tuned_model": job.get("fine_tuned_model")},
                              final=True, team_id="T0SANDBOX", user_id="U0ALICE", origin="start")


def test_retiring_lists_the_followed_fine_tunes_at_risk_with_dates_sources_and_a_move_button(dated, provider,
                                                                                             together):
    make, _ = dated
    bot = make()
    mini = provider.add_job(status="succeeded", model="gpt-4o-mini-2024-07-18")
    nano = provider.add_job(status="succeeded", model="gpt-4.1-nano-2025-04-14")
    elsewhere = together.add_job(status="completed")
    _follow(bot, mini, "openai")
    _follow(bot, nano, "openai")
    _follow(bot, {**elsewhere, "model": elsewhere["model"]}, "together")
    message = bot.services.moves.run(Command("retiring", {}), Caller("T0SANDBOX", "C0GENERAL", "U0ALICE"))
    said = html.unescape(everything_said(message.__dict__ | {"blocks": message.blocks}))
    assert said.count("2027-01-06") >= 2 and "2027-01-14" in said and "OpenAI's deprecations page" in said
    assert "secondary reports" in said and "in 27 days" in said
    assert elsewhere["id"] not in said
    buttons = [e for b in message.blocks for e in b.get("elements") or () if e.get("action_id") == MOVE_OPEN_ACTION]
    assert len(buttons) == 3  # mini: two dates; nano: one
    quiet = bot.services.moves.run(Command("retiring", {}), Caller("T0SANDBOX", "C0EMPTY", "U0ALICE"))
    assert "No fine-tune this channel follows is at risk" in quiet.text


def test_each_channel_is_told_once_30_days_and_once_7_days_before_each_date_across_processes(dated, provider, slack):
    make, today = dated
    first, second = make(), make()
    mini = provider.add_job(status="succeeded", model="gpt-4o-mini-2024-07-18")
    _follow(first, mini, "openai")
    _follow(first, mini, "openai", channel="C0OTHER")
    today["at"] = _day("2026-11-01T12:00:00")  # more than 30 days before: nothing yet
    assert first.services.moves.notify_retiring() == 0
    # 2027-01-06 (OpenAI's end of new jobs) and 2027-01-14 (gpt-4o-mini's shutdown, as reported): each told 30 days
    # ahead (or as soon as it is within 30 days), and again within 7.
    for at, expected in (("2026-12-10T12:00:00", 1), ("2026-12-12T12:00:00", 1), ("2027-01-01T12:00:00", 3),
                         ("2027-01-09T12:00:00", 4)):
        today["at"] = _day(at)
        for bot in (first, second, first):
            bot.services.moves.notify_retiring()
            delivered(bot.services.sender)
        for channel in ("C0GENERAL", "C0OTHER"):
            notices = [m for m in slack.messages_in(channel) if "at risk" in m.get("text", "")]
            assert len(notices) == expected, (at, channel, [n["text"] for n in notices])
    said = [n["text"] for n in slack.messages_in("C0GENERAL") if "at risk" in n.get("text", "")]
    assert "in 27 days (2027-01-06)" in said[0] and "in 5 days (2027-01-06)" in said[1]
    assert "in 13 days (2027-01-14)" in said[2] and "in 5 days (2027-01-14)" in said[3]


def test_the_move_button_opens_a_form_with_the_mapping_and_the_estimate_then_moves(dated, provider, together, slack):
    make, _ = dated
    bot = make()
    server = Server(bot)
    try:
        provider.add_file("file-moveme", "moveme.jsonl", _examples())
        job = provider.add_job(status="succeeded", model="gpt-4o-mini-2024-07-18")
        with provider.lock:
            provider.jobs[job["id"]]["training_file"] = "file-moveme"
        _follow(bot, {**job, "model": "gpt-4o-mini-2024-07-18"}, "openai")
        value = json.dumps({"provider": "openai", "job": job["id"]})
        body = _click(MOVE_OPEN_ACTION, value)
        status, _ = server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))
        assert status == 200
        opened = wait_until(lambda: [v for v in slack.view_log if v["kind"] == "open"])
        view_id = opened[-1]["view_id"]
        estimated = wait_until(lambda: "Estimated cost at" in json.dumps(slack.views[view_id]["blocks"]) and
                               slack.views[view_id], timeout=10)
        shown = json.dumps(estimated["blocks"])
        assert LLAMA_8B in shown and '"value": "together"' in shown and '"value": "openai"' not in shown
        from bot.sandbox.slack import view_submission_body
        from tests.test_data_flow import _post

        values = {"target": {"value": {"type": "static_select", "selected_option": {"value": "fireworks"}}},
                  "model": {"value": {"type": "plain_text_input", "value": None}}}
        status, answer = _post(server, view_submission_body(estimated, values))
        assert status == 200 and answer["response_action"] == "update"
        moved = wait_until(lambda: bot.services.store.moves.moved_to("openai", job["id"]), timeout=10)
        assert moved[0]["target_provider"] == "fireworks"
        assert wait_until(lambda: "Moving" in json.dumps(slack.views[view_id]["blocks"]), timeout=10)
    finally:
        server.close()


def test_only_openais_own_api_has_openais_dates(settings):
    """A compatible service at another base URL is not OpenAI: no end of jobs and no model shutdowns for it."""
    from bot.providers import registry

    [compatible] = [p for p in registry.configured(settings) if p.name == "openai"]
    [own] = [p for p in registry.configured(replace(settings, sandbox=True)) if p.name == "openai"]
    assert compatible.retirements == () and compatible.new_jobs_end is None
    assert {r.on.isoformat() for r in own.retirements} == {"2027-01-06", "2027-01-14"}


def test_a_move_whose_process_died_after_the_create_is_linked_when_reconciled_never_started_again(
        three, database, provider, together):
    """The worst moment: the job was created at the target, then the process died before the move knew of it. The
    move is not taken over while its start waits to be reconciled; reconciling finds the job and links it."""
    from bot.providers.openai_shape import REQUEST_KEY

    location = {"database_url": database} if "://" in database else {"database_path": database}
    bot = build(replace(three, **location))
    try:
        together.add_file("file-crash", "c.jsonl", _examples())
        source = together.add_job(status="completed", training_file="file-crash")
        store = bot.services.store
        _, move = store.moves.claim(team_id=CALLER.team_id, channel_id=CALLER.channel_id, user_id=CALLER.user_id,
                                    source_provider="together", source_job=source["id"], target_provider="openai",
                                    options={"model": MINI})
        store.replays.record_intent("req-crash", team_id=CALLER.team_id, channel_id=CALLER.channel_id,
                                    user_id=CALLER.user_id, response_url=None, training_file="file-sample", model=MINI,
                                    suffix=None, provider="openai", move_id=move["id"])
        made = provider.add_job(status="running", metadata={REQUEST_KEY: "req-crash"})
        with store.engine.transaction() as db:  # its lease long over: the process is gone
            db.conn.execute("UPDATE moves SET lease_until = 0 WHERE id = ?", (move["id"],))
        again = bot.services.moves.run(Command("move", {"job_id": source["id"], "to": "openai", "model": MINI}), CALLER)
        assert "is being moved" in again.text and not provider.requests_to("/fine_tuning/jobs", "POST")
        assert bot.services.jobs.reconcile_starts(older_than=0, worker="w") == 1
        [linked] = store.moves.moved_to("together", source["id"])
        assert linked["new_job"] == made["id"]
        again = bot.services.moves.run(Command("move", {"job_id": source["id"], "to": "openai", "model": MINI}), CALLER)
        assert "was already moved" in again.text and not provider.requests_to("/fine_tuning/jobs", "POST")
    finally:
        bot.stop(timeout=2)


def test_a_denied_move_may_be_moved_again(movers, slack, provider, together):
    bot, server = movers
    bot.services.jobs.approvers = frozenset({"U0BOB"})
    ask(server, slack, "settings confirm_above=0")
    job = _succeeded_openai_job(provider, _examples())
    assert "I held this start" in everything_said(ask(server, slack, f"move {job['id']} to=together"))
    [hold] = bot.services.store.engine.rows("SELECT id FROM held_starts")
    bot.services.jobs.release(Caller("T0SANDBOX", "C0GENERAL", "U0BOB"), hold["id"], "deny")
    said = everything_said(ask(server, slack, f"move {job['id']} to=together"))
    assert "I held this start" in said and "is held, waiting" not in said


def test_a_moves_fallback_text_is_escaped_once():
    from bot.messages.answers import format_note
    from bot.move_messages import format_moving
    from bot.providers.types import Job

    message = format_moving(Job(id="ft-a&b", status="succeeded", model="m", provider="openai"), "together", ["n"],
                            started=format_note("Started x & y"))
    assert "ft-a&amp;b" in message.text and "x &amp; y" in message.text and "&amp;amp;" not in message.text


def test_a_move_whose_job_failed_may_be_made_again(movers, slack, provider, together):
    bot, server = movers
    job = _succeeded_openai_job(provider, _examples())
    ask(server, slack, f"move {job['id']} to=together")
    [first] = bot.services.store.moves.moved_to("openai", job["id"])
    assert "was already moved" in everything_said(ask(server, slack, f"move {job['id']} to=together"))
    together.set_status(first["new_job"], "error")
    bot.services.poller.run_once()
    said = everything_said(ask(server, slack, f"move {job['id']} to=together model=Qwen/Qwen2.5-7B-Instruct"))
    assert "Started fine-tuning job" in said, said
    [again] = bot.services.store.moves.moved_to("openai", job["id"])
    assert again["new_job"] != first["new_job"] and len(_posts(together, "/v1/fine-tunes")) == 2


def test_another_workspace_can_neither_see_nor_carry_on_a_move(movers, slack, provider, together):
    """A move belongs to the workspace that made it: another workspace's same move is its own, and another workspace
    cannot go on with this one's (its Pick the training file button, its form)."""
    from bot.sandbox.slack import block_action_body

    bot, server = movers
    job = _succeeded_openai_job(provider, _examples())
    provider.withhold("file-moveme")
    reply = ask(server, slack, f"move {job['id']} to=together")  # (the stand-in's workspace: T0SANDBOX)
    [button] = [e for b in reply["blocks"] for e in b.get("elements") or () if e.get("action_id") == MOVE_PICK_ACTION]
    move_id = json.loads(html.unescape(button["value"]))["move"]
    store = bot.services.store
    assert store.moves.take(move_id, "needs_file", team_id="T0OTHERTEAM") is False
    body = block_action_body(MOVE_PICK_ACTION, button["value"], team_id="T0OTHERTEAM",
                             response_url=slack.response_url("other"))
    server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))
    refused = wait_until(lambda: [r for r in slack.responses if r["url"].endswith("/other")])
    assert "not known here" in refused[-1]["text"] and not [v for v in slack.view_log if v["kind"] == "open"]
    mine, theirs = store.moves.claim(team_id="T0OTHERTEAM", channel_id="C9", user_id="U9", source_provider="openai",
                                     source_job=job["id"], target_provider="together", options={})
    assert mine and theirs["id"] != move_id and store.moves.get(move_id)["state"] == "needs_file"
