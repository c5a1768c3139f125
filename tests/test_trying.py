"""Trying a fine-tuned model in Slack, over signed HTTP: its answer beside its base model's, sharing, comparing on
held-out examples, the Try it button, and every refusal."""

from __future__ import annotations

import json
import logging
import threading

import pytest

from bot.config import Settings
from bot.messages.jobs import TRY_OPEN_ACTION, TRY_SHARE_ACTION
from bot.providers.openai_shape import OpenAIProvider, build_client
from bot.providers.types import Providers
from bot.sandbox.openai import SAMPLE_FILE_ID
from bot.sandbox.slack import block_action_body, signed_headers, view_submission_body
from bot.trying import Refused, TryService
from storage import Store
from tests.conftest import SIGNING_SECRET, Server, ask, everything_said, followed_until_it_ends, wait_until

PROMPT = "What's the capital of France?"


def _succeeded(provider, **fields):
    return provider.add_job(status="succeeded", **fields)


def _chats(stand_in) -> list:
    return [r for r in stand_in.received if r.method == "POST" and r.path.endswith("/chat/completions")]


def test_try_a_job_shows_both_answers_side_by_side_to_the_asker(server, slack, provider, bot):
    job = _succeeded(provider)
    reply = ask(server, slack, f"try {job['id']} {PROMPT}")
    said = everything_said(reply)
    assert reply.get("response_type") != "in_channel"  # only the asker sees it
    assert "Paris, as if everyone doesn" in said  # the tuned model answers as its training file taught it
    assert "[sandbox base model gpt-4.1-mini-2025-04-14]" in said
    assert job["fine_tuned_model"] in said and "gpt-4.1-mini-2025-04-14" in said
    [fields] = [b["fields"] for b in reply["blocks"] if b.get("fields")]
    assert all(" s · " in f["text"] and "tokens out" in f["text"] for f in fields)
    assert fields[0]["text"].startswith("*Fine-tuned*") and fields[1]["text"].startswith("*Base*")
    asked = {r.json()["model"]: r.json() for r in _chats(provider)}
    assert set(asked) == {job["fine_tuned_model"], "gpt-4.1-mini-2025-04-14"}
    assert all(body["max_completion_tokens"] == 512 and body["messages"] == [{"role": "user", "content": PROMPT}]
               for body in asked.values())
    assert TRY_SHARE_ACTION in said


def test_both_models_are_asked_at_once(server, slack, provider):
    job = _succeeded(provider)
    provider.chat_latency = {job["fine_tuned_model"]: 2.0, "gpt-4.1-mini-2025-04-14": 2.0}
    ask(server, slack, f"try {job['id']} {PROMPT}")
    first, second = sorted(r.at for r in _chats(provider))
    # The second was asked before the first (2 s) could answer: asked in turn, they would be 2 s or more apart. (The
    # margin is wide so that a loaded machine's scheduling cannot pass for asking in turn.)
    assert second - first < 1.5


def test_a_model_name_works_and_one_failing_side_shows_its_error(server, slack, provider, bot):
    job = _succeeded(provider)
    ask(server, slack, f"subscribe {job['id']}")  # now the bot knows the job behind the model name
    by_name = everything_said(ask(server, slack, f"try {job['fine_tuned_model']} {PROMPT}"))
    assert "Paris, as if everyone doesn" in by_name
    unknown = "ft:gpt-4o-mini-2024-07-18:acme:gone:Zz9"  # a fine-tuned name the provider does not serve
    said = everything_said(ask(server, slack, f"try {unknown} Hello there"))
    assert "does not exist or you do not have access" in said  # the tuned side's error...
    assert "[sandbox base model gpt-4o-mini-2024-07-18]" in said  # ...beside the base model's answer


def test_share_posts_the_answer_in_the_channel_for_its_asker_only(server, slack, provider):
    job = _succeeded(provider)
    reply = ask(server, slack, f"try {job['id']} {PROMPT}")
    [button] = [e for b in reply["blocks"] if b["type"] == "actions" for e in b["elements"]]
    body = block_action_body(TRY_SHARE_ACTION, button["value"], user_id="U0MALLORY",
                             response_url=slack.response_url("mallory"))
    server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))
    refused = wait_until(lambda: [r for r in slack.responses if r["url"].endswith("/mallory")])
    assert "Only the person who asked can share" in refused[0]["text"] and slack.messages_in("C0GENERAL") == []
    body = block_action_body(TRY_SHARE_ACTION, button["value"], response_url=slack.response_url("share"))
    server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))
    [shared] = wait_until(lambda: slack.messages_in("C0GENERAL"))
    said = json.dumps(shared["blocks"])
    assert "Paris, as if everyone doesn" in said and "Shared by <@U0ALICE>" in said and TRY_SHARE_ACTION not in said
    # The asker's copy, with its button, becomes a line saying where it went.
    [done] = wait_until(lambda: [r for r in slack.responses if r["url"].endswith("/share")])
    assert done["replace_original"] is True and "Shared in the channel." in done["text"]


def _click_share(server, slack, value: str, name: str) -> None:
    body = block_action_body(TRY_SHARE_ACTION, value, response_url=slack.response_url(name))
    assert server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))[0] == 200


def test_an_answer_is_shared_once_however_often_its_button_is_clicked(server, slack, provider):
    job = _succeeded(provider)
    reply = ask(server, slack, f"try {job['id']} {PROMPT}")
    [button] = [e for b in reply["blocks"] if b["type"] == "actions" for e in b["elements"]]
    clicks = [threading.Thread(target=_click_share, args=(server, slack, button["value"], f"c{n}"))
              for n in range(4)]
    for click in clicks:  # a double click, and then some: all at once
        click.start()
    for click in clicks:
        click.join(10)
    answers = wait_until(lambda: (lambda mine: len(mine) >= 4 and mine)(
        [r for r in slack.responses if r["url"].rsplit("/", 1)[-1] in {"c0", "c1", "c2", "c3"}]))
    assert len(slack.messages_in("C0GENERAL")) == 1
    assert sum("already shared" in r["text"] for r in answers) == 3
    assert sum("Shared in the channel." in r["text"] for r in answers) == 1


def test_a_share_slack_refused_can_be_tried_again(server, slack, provider):
    job = _succeeded(provider)
    reply = ask(server, slack, f"try {job['id']} {PROMPT}")
    [button] = [e for b in reply["blocks"] if b["type"] == "actions" for e in b["elements"]]
    slack.fail("status", match="chat.postMessage", status=503, times=1)
    _click_share(server, slack, button["value"], "first")
    [apology] = wait_until(lambda: [r for r in slack.responses if r["url"].endswith("/first")])
    assert slack.messages_in("C0GENERAL") == [] and "already shared" not in apology["text"]
    _click_share(server, slack, button["value"], "second")
    assert wait_until(lambda: slack.messages_in("C0GENERAL"))
    [done] = wait_until(lambda: [r for r in slack.responses if r["url"].endswith("/second")])
    assert "Shared in the channel." in done["text"]


def test_compare_on_the_validation_file(server, slack, provider):
    job = _succeeded(provider, validation_file=SAMPLE_FILE_ID)
    reply = ask(server, slack, f"compare {job['id']} n=3")
    said = everything_said(reply)
    assert "3 examples from the validation file" in said
    assert "Exact matches with the expected answer: fine-tuned 3/3, base 0/3." in said
    assert "difflib character ratio" in said and "fine-tuned 1.00" in said
    assert "*Expected:* Paris, as if everyone" in said and "(line 1)" in said
    assert len(_chats(provider)) == 6


def test_compare_without_a_validation_file_takes_the_end_of_the_training_file(server, slack, provider):
    job = _succeeded(provider)
    said = everything_said(ask(server, slack, f"compare {job['id']} n=2"))
    assert "from the end of the training file" in said and "(line 9)" in said and "(line 10)" in said


def test_the_try_it_button_opens_a_form_that_answers(server, slack, provider, bot):
    job = _succeeded(provider)
    ask(server, slack, f"subscribe {job['id']}", channel="C0TEAM")
    value = json.dumps({"provider": "openai", "job": job["id"]})
    body = block_action_body(TRY_OPEN_ACTION, value, channel_id="C0TEAM", response_url=slack.response_url("t"))
    server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))
    [opened] = wait_until(lambda: [v for v in slack.view_log if v["kind"] == "open"])
    form = slack.views[opened["view_id"]]
    assert job["fine_tuned_model"] in json.dumps(form["blocks"])
    values = {"prompt": {"value": {"type": "plain_text_input", "value": PROMPT}},
              "system": {"value": {"type": "plain_text_input", "value": "Be sarcastic."}}}
    sub = view_submission_body(form, values)
    status, raw = server.post("/slack/events", sub, signed_headers(sub, SIGNING_SECRET))
    answer = json.loads(raw)
    assert answer["response_action"] == "update" and "Asking both models" in json.dumps(answer["view"])
    slack.answer_to_submission(form["id"], answer)
    done = wait_until(lambda: "Fine-tuned" in json.dumps(slack.views[form["id"]]["blocks"])
                      and slack.views[form["id"]], timeout=10)
    said = json.dumps(done["blocks"])
    assert "Sarcastic" in said or "sarcastic" in said  # the system message is shown with the answers
    assert {r.json()["messages"][0]["content"] for r in _chats(provider)} == {"Be sarcastic."}
    empty = view_submission_body(form, {"prompt": {"value": {"type": "plain_text_input", "value": "  "}}})
    status, raw = server.post("/slack/events", empty, signed_headers(empty, SIGNING_SECRET))
    assert json.loads(raw) == {"response_action": "errors", "errors": {"prompt": "Write a prompt for both models."}}


def test_success_announcements_carry_the_try_it_button(server, slack, provider, bot):
    job = followed_until_it_ends(server, bot, slack, provider)
    [posted] = wait_until(lambda: slack.outcomes_in("C0GENERAL"))
    [button] = [e for b in posted["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert button["action_id"] == TRY_OPEN_ACTION and job["id"] in button["value"]
    [card] = wait_until(lambda: [c for c in slack.cards_in("C0GENERAL") if "succeeded" in c["text"]])
    assert TRY_OPEN_ACTION in json.dumps(card["blocks"])  # the card of a succeeded job can be tried too


def test_refusals_before_any_model_is_called(make_bot, slack, provider, caplog):
    bot = make_bot(allowed_user_ids=frozenset({"U0BOSS"}), try_max_prompt_chars=20)
    server = Server(bot)
    try:
        job = _succeeded(provider)
        running = provider.add_job(status="running")
        assert "not on this bot's list" in ask(server, slack, f"try {job['id']} hello")["text"]
        boss = {"user": "U0BOSS"}
        assert "needs a prompt" in ask(server, slack, f"try {job['id']}", **boss)["text"]
        caplog.set_level(logging.INFO)
        secret_prompt = "my confidential customer question, far too long"
        long = ask(server, slack, f"try {job['id']} {secret_prompt}", **boss)["text"]
        assert "the most I send is 20 (TRY_MAX_PROMPT_CHARS)" in long
        assert "has not succeeded (it is running)" in ask(server, slack, f"try {running['id']} hi", **boss)["text"]
        assert "don't know a fine-tuned model called `my-model`" in ask(server, slack, "try my-model hi",
                                                                          **boss)["text"]
        assert _chats(provider) == []
        ask(server, slack, f"try {job['id']} short one", **boss)
        assert len(_chats(provider)) == 2
        assert all(secret_prompt not in r.getMessage() and "short one" not in r.getMessage()
                   for r in caplog.records if r.levelno >= logging.INFO)
    finally:
        server.close()


def test_model_output_is_inert_and_cut_cleanly(server, slack, provider):
    hostile = "<!channel> go to <https://evil.example|here> " + "x" * 3000
    provider.add_file("file-hostile", "hostile.jsonl", json.dumps({"messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": hostile}]}).encode() + b"\n")
    job = provider.add_job(status="succeeded", training_file="file-hostile")
    reply = ask(server, slack, f"try {job['id']} Hi")
    said = everything_said(reply)
    assert "<!channel>" not in said and "<https://evil" not in said and "&lt;!channel&gt;" in said
    assert "(cut: " in said and all(len(f["text"]) <= 2000 for b in reply["blocks"] for f in b.get("fields", []))


def test_together_models_are_tried_through_togethers_own_endpoint(make_bot, both, slack, together):
    bot = make_bot(env=both.env)
    server = Server(bot)
    try:
        job = together.add_job(status="completed")
        said = everything_said(ask(server, slack, f"try {job['id']} {PROMPT}"))
        assert "Paris, as if everyone doesn" in said and job["model_output_name"] in said
        assert {r.json()["model"] for r in _chats(together)} == {job["model_output_name"], job["model"]}
    finally:
        server.close()


def test_azure_openai_asks_for_the_deployment(tmp_path, provider):
    settings = Settings(env={"AZURE_OPENAI_ENDPOINT": provider.url, "AZURE_OPENAI_API_KEY": "k",
                             "OPENAI_API_VERSION": "2024-10-21"})
    azure = OpenAIProvider(build_client(settings, azure=True), name="azure")
    trying = TryService(Providers([azure]), Store(str(tmp_path / "s.db")), None, None, max_tokens=10,
                        max_prompt_chars=100, max_file_bytes=1000)
    with pytest.raises(Refused, match="deployment=<name>"):
        trying.resolve("ft:gpt-4o-mini-2024-07-18:acme::AbC", None, None)
    target = trying.resolve("ft:gpt-4o-mini-2024-07-18:acme::AbC", None, "my-tuned-deployment")
    assert (target.tuned, target.base) == ("my-tuned-deployment", "gpt-4o-mini-2024-07-18")


# -- TRY_LIMIT_PER_MINUTE (issue 28) -------------------------------------------------------------------------------


def test_fifty_tries_at_once_from_one_person_send_at_most_the_limit_and_others_are_unaffected(make_bot, slack,
                                                                                             provider):
    """50 concurrent `try`s from one person made 100 model calls; now at most TRY_LIMIT_PER_MINUTE prompts (each
    asked of both models), the rest answered with when to try again."""
    from bot.commands import Command
    from bot.jobs import Caller

    bot = make_bot(try_limit_per_minute=10)
    job = _succeeded(provider)
    alice = Caller("T", "C0GENERAL", "U0ALICE")
    answers = []
    go = threading.Barrier(50)

    def try_once():
        go.wait(10)
        answers.append(bot.services.trying.run(Command("try", {"model_or_job": job["id"], "prompt": PROMPT}), alice))

    threads = [threading.Thread(target=try_once) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    refused = [a for a in answers if "TRY_LIMIT_PER_MINUTE" in a.text]
    assert len(answers) == 50 and len(refused) == 40 and len(_chats(provider)) == 20
    assert "try again in" in refused[0].text and "seconds" in refused[0].text
    bob = bot.services.trying.run(Command("try", {"model_or_job": job["id"], "prompt": PROMPT}),
                                  Caller("T", "C0GENERAL", "U0BOB"))
    assert "TRY_LIMIT_PER_MINUTE" not in bob.text and len(_chats(provider)) == 22
    compare = bot.services.trying.run(Command("compare", {"job_id": job["id"], "n": 3}),
                                      Caller("T", "C0GENERAL", "U0BOB"))  # 1 + 3 examples > 3 left of 10? no: fits
    assert "TRY_LIMIT_PER_MINUTE" not in compare.text
    too_many = bot.services.trying.run(Command("compare", {"job_id": job["id"], "n": 8}),
                                       Caller("T", "C0GENERAL", "U0BOB"))  # 4 used: 8 more would be 12
    assert "TRY_LIMIT_PER_MINUTE" in too_many.text and "(8 asked now)" in too_many.text


def test_the_limit_is_counted_across_replicas_and_frees_as_the_minute_passes(database):
    now = {"t": 1000.0}
    stores = [Store(database, clock=lambda: now["t"]) for _ in range(2)]
    try:
        for i in range(4):
            assert stores[i % 2].forms.take_model_calls("U0ALICE", 1, limit=5) is None
        assert stores[0].forms.take_model_calls("U0ALICE", 2, limit=5) == 60.0  # the oldest leaves the window at 1060
        assert stores[1].forms.take_model_calls("U0BOB", 5, limit=5) is None
        now["t"] = 1061.0
        assert stores[1].forms.take_model_calls("U0ALICE", 2, limit=5) is None
    finally:
        for store in stores:
            store.close()
