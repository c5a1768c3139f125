"""Training data from Slack, over signed HTTP: the form, its report, the confirm, the upload and the followed job."""

from __future__ import annotations

import json
import threading
import time

import pytest

from bot.sandbox.slack import signed_headers, view_action_body, view_submission_body
from bot.slack import FileUnavailable, SlackGateway
from bot.views import DATA_CONFIRM_ACTION
from tests.conftest import SIGNING_SECRET, Server, ask, wait_until

MINI = "gpt-4.1-mini-2025-04-14"


def _clean(n: int = 12, tag: str = "") -> bytes:
    return "".join(json.dumps({"messages": [{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": f"Question {tag}{i}?"},
                                            {"role": "assistant", "content": f"Answer {i}."}]}) + "\n"
                   for i in range(n)).encode()


BROKEN = (b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
          b'{"messages": [{"role": "robot", "content": "beep"}]}\n'
          b'not json\n')


def _post(server: Server, body: str) -> tuple[int, dict]:
    status, raw = server.post("/slack/events", body, signed_headers(body, SIGNING_SECRET))
    return status, (json.loads(raw) if raw.strip().startswith(b"{") else {})


def _open_form(server, slack, text: str = "start", **kwargs) -> dict:
    before = len([v for v in slack.view_log if v["kind"] == "open"])
    status, ack = server.command(text, response_url=slack.response_url("form"), **kwargs)
    assert status == 200 and not ack.get("text"), ack  # an empty ack: the form is the answer
    opened = wait_until(lambda: (found := [v for v in slack.view_log if v["kind"] == "open"]) and len(found) > before
                        and found)
    return slack.views[opened[-1]["view_id"]]


def _values(file_id: str | None, *, model: str | None = None, suffix: str | None = None, epochs: str | None = None,
            validation: str | None = None) -> dict:
    values = {"training": {"file": {"type": "file_input",
                                    "files": [{"id": file_id, "name": "x.jsonl"}] if file_id else []}}}
    if validation:
        values["validation"] = {"file": {"type": "file_input", "files": [{"id": validation}]}}
    if model:
        values["model"] = {"value": {"type": "static_select", "selected_option": {"value": model}}}
    if suffix is not None:
        values["suffix"] = {"value": {"type": "plain_text_input", "value": suffix}}
    if epochs is not None:
        values["epochs"] = {"value": {"type": "number_input", "value": epochs}}
    return values


def _submit(server, slack, view: dict, values: dict) -> dict:
    status, answer = _post(server, view_submission_body(view, values))
    assert status == 200
    slack.answer_to_submission(view["id"], answer)
    return answer


def _settled(slack, view_id: str) -> dict:
    """The modal once its work is done (no longer saying it is busy)."""
    settled = wait_until(lambda: (v := slack.views[view_id]) and ":hourglass" not in json.dumps(v["blocks"]) and v,
                         timeout=10)
    assert settled, [(r["kind"], json.dumps(r["view"]["blocks"])[:200]) for r in slack.view_log]
    return settled


def _said(view: dict) -> str:
    return json.dumps(view["blocks"], ensure_ascii=False)


def test_from_the_form_to_a_checked_upload_and_a_followed_job(server, slack, provider, bot):
    form = _open_form(server, slack)
    said = _said(form)
    assert '"type": "file_input"' in said and '"filetypes": ["jsonl"]' in said and f'"value": "{MINI}"' in said
    assert "gpt-4.1-nano-2025-04-14" in said and "babbage-002" not in said  # retired models are not offered

    file_id = slack.add_file("support.jsonl", _clean())
    answer = _submit(server, slack, form, _values(file_id, model=MINI, suffix="support", epochs="2"))
    assert answer["response_action"] == "update" and "checking" in json.dumps(answer["view"])
    report = _settled(slack, form["id"])
    said = _said(report)
    assert "support.jsonl* is ready" in said and "Examples: 12" in said and "Errors: none." in said
    assert "× 2 epochs" in said and "Estimated price: under $0.01" in said
    [button] = [e for b in report["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert button["action_id"] == DATA_CONFIRM_ACTION
    assert button["text"]["text"] == "Upload and start the job · est. under $0.01"
    assert provider.requests_to("/files", "POST") == [] and provider.jobs == {}  # nothing spent before the click

    status, _ = _post(server, view_action_body(report, DATA_CONFIRM_ACTION, "start"))
    assert status == 200
    [job_id] = wait_until(lambda: list(provider.jobs), timeout=10)
    [upload] = provider.requests_to("/files", "POST")
    assert b'name="purpose"\r\n\r\nfine-tune' in upload.body and _clean() in upload.body
    job = provider.jobs[job_id]
    assert job["training_file"] in provider.files and provider.files[job["training_file"]]["_content"] == _clean()
    assert (job["suffix"], job["hyperparameters"]["n_epochs"], job["model"]) == ("support", 2, MINI)
    follows = bot.services.store.follows
    assert wait_until(lambda: [f["channel_id"] for f in follows.followers(job_id, "openai")]) == ["C0GENERAL"]
    [card] = wait_until(lambda: slack.cards_in("C0GENERAL"))  # the channel sees the job's card
    assert job_id in card["text"] and "support.jsonl" not in card["text"]
    done = _settled(slack, form["id"])
    assert job_id in _said(done) and "Started fine-tuning job" in _said(done)  # the starter, in the form
    # The estimate the report showed is the start's (its count kept from the check: the file is not read again).
    assert "Estimated cost: under $0.01" in _said(done)
    assert provider.requests_to(f"/files/{job['training_file']}/content", "GET") == []
    assert bot.services.store.follows.job(job_id, "openai")["estimate"] > 0

    _post(server, view_action_body(report, DATA_CONFIRM_ACTION, "start"))  # a second click on the same report
    # (its own trigger_id, as a real second click has; the work after the ack is the bot's, so give it time)
    assert not wait_until(lambda: len(provider.jobs) > 1, timeout=3)
    assert len(provider.jobs) == 1 and len(provider.requests_to("/files", "POST")) == 1


def test_a_file_with_errors_gets_its_lines_and_is_never_uploaded(server, slack, provider):
    form = _open_form(server, slack)
    file_id = slack.add_file("broken.jsonl", BROKEN)
    _submit(server, slack, form, _values(file_id))
    said = _said(_settled(slack, form["id"]))
    assert "broken.jsonl* has problems to fix; nothing was uploaded" in said
    assert "a message with an unknown role: 1 (line 2)" in said and "not valid JSON: 1 (line 3)" in said
    assert DATA_CONFIRM_ACTION not in said and provider.received == []


def test_a_form_missing_its_file_gets_slacks_inline_error(server, slack):
    form = _open_form(server, slack)
    answer = _submit(server, slack, form, _values(None, epochs="99"))
    assert answer == {"response_action": "errors",
                      "errors": {"training": "Pick a .jsonl training file.", "epochs": "A whole number from 1 to 50."}}


def test_a_file_slack_will_not_give_is_a_clear_answer(server, slack, provider):
    form = _open_form(server, slack)
    _submit(server, slack, form, _values("F0DELETED"))
    said = _said(_settled(slack, form["id"]))
    assert "Slack would not give me the file: it no longer exists (deleted?)." in said and provider.received == []


def test_a_download_without_the_bot_token_is_refused(slack):
    from slack_sdk import WebClient

    file_id = slack.add_file("a.jsonl", _clean())
    url = slack._files_info({"file": file_id, "_token": slack.token})["file"]["url_private_download"]
    stranger = SlackGateway(WebClient(token="xoxb-not-the-bots", base_url=slack.api_url))
    with pytest.raises(FileUnavailable, match="sign-in page"):
        stranger.download(url, max_bytes=10**6)
    with pytest.raises(FileUnavailable, match="larger than"):
        SlackGateway(WebClient(token=slack.token, base_url=slack.api_url)).download(url, max_bytes=100)


def test_check_reports_without_a_button_and_upload_returns_the_file_id(server, slack, provider):
    form = _open_form(server, slack, "check")
    assert '"block_id": "model"' not in _said(form)  # checking asks only for the file
    _submit(server, slack, form, _values(slack.add_file("data.jsonl", _clean())))
    said = _said(_settled(slack, form["id"]))
    assert "Errors: none." in said and DATA_CONFIRM_ACTION not in said

    form = _open_form(server, slack, "upload")
    _submit(server, slack, form, _values(slack.add_file("data.jsonl", _clean())))
    report = _settled(slack, form["id"])
    assert "Upload to OpenAI" in _said(report)
    _post(server, view_action_body(report, DATA_CONFIRM_ACTION, "upload"))
    done = wait_until(lambda: "Uploaded" in _said(slack.views[form["id"]]) and slack.views[form["id"]])
    [file_id] = [f for f in provider.files if f not in {"file-sample", "file-invalid"}]
    assert file_id in _said(done) and f"/finetune start {file_id} provider=openai" in _said(done)
    assert provider.jobs == {}


def test_a_file_changed_after_its_check_is_not_uploaded(server, slack, provider):
    form = _open_form(server, slack, "upload")
    file_id = slack.add_file("data.jsonl", _clean())
    _submit(server, slack, form, _values(file_id))
    report = _settled(slack, form["id"])
    slack.files[file_id]["_content"] = _clean(tag="changed ")
    _post(server, view_action_body(report, DATA_CONFIRM_ACTION, "upload"))
    done = wait_until(lambda: "changed in Slack" in _said(slack.views[form["id"]]) and slack.views[form["id"]])
    assert "check it again" in _said(done) and provider.requests_to("/files", "POST") == []


def test_hostile_file_names_stay_inert_in_the_modal(server, slack):
    form = _open_form(server, slack, "check")
    _submit(server, slack, form, _values(slack.add_file("<!channel> & <@U0BOSS>.jsonl", BROKEN)))
    said = _said(_settled(slack, form["id"]))
    assert "&lt;!channel&gt; &amp; &lt;@U0BOSS&gt;.jsonl" in said and "<!channel>" not in said


def test_upload_obeys_the_allow_list_before_any_form_opens(make_bot, slack):
    bot = make_bot(allowed_user_ids=frozenset({"U0BOSS"}))
    server = Server(bot)
    try:
        status, ack = server.command("upload", response_url=slack.response_url("no"))
        assert "not on this bot's list" in ack["text"] and slack.view_log == []
    finally:
        server.close()


def test_together_from_the_form_with_its_own_estimate(make_bot, both, slack, together):
    bot = make_bot(env=both.env)
    server = Server(bot)
    try:
        form = _open_form(server, slack, "start provider=together")
        said = _said(form)
        assert "Base model at Together AI" in said and "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference" in said
        _submit(server, slack, form, _values(slack.add_file("chat.jsonl", _clean()),
                                             model="meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"))
        report = _settled(slack, form["id"])
        assert "approximate: counted with OpenAI" in _said(report) and "$0.48 per million" in _said(report)
        _post(server, view_action_body(report, DATA_CONFIRM_ACTION, "start"))
        [job_id] = wait_until(lambda: list(together.jobs), timeout=10)
        assert [(r.method, r.path.split("/")[1]) for r in together.received[:3]] == [
            ("POST", "v1"), ("PUT", "upload"), ("POST", "v1")]  # the SDK's upload: form, bytes, preprocess
        done = wait_until(lambda: job_id in _said(slack.views[form["id"]]) and slack.views[form["id"]])
        assert "Together AI's own estimate for this job: under $0.01" in _said(done)
        assert wait_until(lambda: bot.services.store.follows.followers(job_id, "together"))
    finally:
        server.close()


def test_fireworks_from_the_form_a_dataset_created_uploaded_and_started(make_bot, three, slack, fireworks):
    bot = make_bot(env=three.env)
    server = Server(bot)
    try:
        form = _open_form(server, slack, "start provider=fireworks")
        said = _said(form)
        assert "Base model at Fireworks AI" in said and "accounts/fireworks/models/llama-v3p1-8b-instruct" in said
        _submit(server, slack, form, _values(slack.add_file("support chats.jsonl", _clean()),
                                             model="accounts/fireworks/models/llama-v3p1-8b-instruct"))
        report = _settled(slack, form["id"])
        assert "approximate: counted with OpenAI" in _said(report) and "$0.50 per million" in _said(report)
        _post(server, view_action_body(report, DATA_CONFIRM_ACTION, "start"))
        [job_id] = wait_until(lambda: list(fireworks.jobs), timeout=10)
        [dataset_id] = [d for d in fireworks.files if d.startswith("support-chats-")]
        assert fireworks.files[dataset_id]["state"] == "READY"
        assert [r.path.rsplit("/", 1)[-1] for r in fireworks.received if r.method == "POST"][:2] == [
            "datasets", f"{dataset_id}:upload"]  # a dataset made, then the bytes uploaded to it (multipart)
        assert fireworks.jobs[job_id]["dataset"].endswith(f"/datasets/{dataset_id}")
        assert wait_until(lambda: bot.services.store.follows.followers(job_id, "fireworks"))
    finally:
        server.close()


def test_the_cap_on_file_size_is_a_setting(make_bot, slack, settings):
    bot = make_bot(max_training_file_mb=0.001)  # about a kilobyte
    server = Server(bot)
    try:
        form = _open_form(server, slack, "check")
        _submit(server, slack, form, _values(slack.add_file("big.jsonl", _clean(200))))
        said = _said(_settled(slack, form["id"]))
        assert "MAX_TRAINING_FILE_MB" in said
    finally:
        server.close()



def test_a_validation_file_is_checked_uploaded_and_used(server, slack, provider):
    form = _open_form(server, slack)
    training, validation = slack.add_file("train.jsonl", _clean()), slack.add_file("valid.jsonl", _clean(10, "v"))
    _submit(server, slack, form, _values(training, model=MINI, validation=validation))
    report = _settled(slack, form["id"])
    assert "Validation file valid.jsonl:" in _said(report) and "Examples: 10." in _said(report)
    _post(server, view_action_body(report, DATA_CONFIRM_ACTION, "start"))
    [job_id] = wait_until(lambda: list(provider.jobs), timeout=10)
    job = provider.jobs[job_id]
    assert provider.files[job["validation_file"]]["_content"] == _clean(10, "v")
    assert provider.files[job["training_file"]]["_content"] == _clean()


def test_a_broken_validation_file_stops_the_start(server, slack, provider):
    form = _open_form(server, slack)
    _submit(server, slack, form, _values(slack.add_file("train.jsonl", _clean()), model=MINI,
                                         validation=slack.add_file("valid.jsonl", BROKEN)))
    said = _said(_settled(slack, form["id"]))
    assert "has problems to fix" in said and "not valid JSON: 1 (line 3)" in said and DATA_CONFIRM_ACTION not in said
    assert provider.received == []


def test_a_start_from_the_form_held_by_the_channel_goes_to_its_starter_with_its_button(server, slack, provider):
    ask(server, slack, "settings confirm_above=0")
    form = _open_form(server, slack)
    file_id = slack.add_file("support.jsonl", _clean())
    _submit(server, slack, form, _values(file_id, model=MINI))
    report = _settled(slack, form["id"])
    _post(server, view_action_body(report, DATA_CONFIRM_ACTION, "start"))
    done = wait_until(lambda: "held this start" in _said(_settled(slack, form["id"])) and _settled(slack, form["id"]))
    assert done and provider.jobs == {}  # uploaded, but nothing started
    [held] = wait_until(lambda: [m for m in slack.messages_in("U0ALICE") if "held this start" in m["text"]])
    assert "hold_start" in json.dumps(held["blocks"])


def test_a_form_opens_within_its_trigger_ids_seconds_while_every_worker_is_busy(server, slack, bot):
    from bot.app import WORKERS

    gate = threading.Event()
    busy = [bot.services.background.submit(gate.wait, 30) for _ in range(WORKERS + 4)]  # slow work, queued too
    try:
        started = time.monotonic()
        form = _open_form(server, slack)
        assert form and time.monotonic() - started < 3  # Slack honours a trigger_id for 3 seconds
    finally:
        gate.set()
    assert all(job.result(10) for job in busy)
