"""`finetune-bot shell`: a scripted session against the sandbox, as a newcomer would run it."""

from __future__ import annotations

import io
import json
import os
import pathlib
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from bot import shell, shell_render
from bot.config import load
from tests import zygote
from tests.conftest import wait_until


def _run(script: str, tmp_path, timeout: float = 60, *, fresh: bool = False, **env) -> subprocess.CompletedProcess:
    """`finetune-bot shell` with `script` piped in: forked from the tests' zygote (tests/zygote.py), or, `fresh`, a
    new interpreter, as a user's terminal starts it (what happens before the bot's code runs: its imports' warnings)."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SLACK_", "OPENAI_", "AZURE_", "DATABASE", "TOGETHER_", "DEFAULT_PROVIDER"))}
    argv = [sys.executable, "-m", "bot", "shell", "--timeout", str(timeout)]
    env = {**clean, "SANDBOX_PACE_SECONDS": "0.2", **env}
    if not fresh:
        return zygote.run(argv, input=script, env=env, cwd=tmp_path, timeout=timeout + 30)
    return subprocess.run(argv, input=script, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout + 30)


@pytest.mark.heavy(9)
def test_piped_start_ends_with_the_success_announcement(tmp_path):
    """The README's Quick start as a user runs it, in a new interpreter."""
    result = _run("/finetune start file-sample suffix=demo\n", tmp_path, fresh=True)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "SANDBOX" in out and "no money spent" in out and "file-sample" in out
    assert "Started fine-tuning job" in out
    job_id = re.search(r"ftjob-[0-9a-f]+", out)[0]
    assert "FINE-TUNING JOB SUCCEEDED" in out
    model = re.search(r"```(ft:gpt-4\.1-mini-2025-04-14:sandbox:demo:[0-9a-f]+)```", out)
    assert model, out
    assert out.index("Started fine-tuning job") < out.index("FINE-TUNING JOB SUCCEEDED")
    assert out.count("FINE-TUNING JOB SUCCEEDED") == 1 and job_id in out.split("SUCCEEDED")[1]
    assert "[#general] finetune-bot posted:" in out
    assert "Sandbox provider" in out
    assert not list(tmp_path.iterdir())  # the sandbox's database was temporary


@pytest.mark.heavy(24)
def test_the_readme_session_shows_progress_in_the_jobs_thread(tmp_path):
    """The README's first sandbox session, as written (the default pace): the card, a progress reply in its thread,
    then the outcome."""
    result = _run("/finetune start file-sample suffix=support-bot\n", tmp_path, SANDBOX_PACE_SECONDS="2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    progress = re.search(r"reply in the thread of ftjob-[0-9a-f]+:\n\s+📉 Step \d+ of 10 · training loss", out)
    assert progress, out
    assert out.index("posted:") < progress.start() < out.index("FINE-TUNING JOB SUCCEEDED")


@pytest.mark.heavy(14)
def test_the_sandbox_speaks_both_providers_with_no_account(tmp_path):
    script = ("/finetune providers\n/finetune start file-sample provider=together suffix=demo\n"
              "/finetune start file-sample\n")
    result = _run(script, tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "provider=together" in out and "Together AI" in out and "Cannot: pause and resume" in out
    together_job = re.search(r"ft-[0-9a-f]{8}-[0-9a-f-]{27}", out)[0]
    openai_job = re.search(r"ftjob-[0-9a-f]+", out)[0]
    assert out.count("FINE-TUNING JOB SUCCEEDED") == 2
    assert re.search(r"```sandbox-user/Meta-Llama-3\.1-8B-Instruct-Reference-demo-[0-9a-f]+```", out), out
    assert together_job in out.split("SUCCEEDED", 1)[1] + out.split("SUCCEEDED")[2]
    assert openai_job in out


@pytest.mark.heavy(11)
def test_the_sandbox_speaks_fireworks_with_no_account(tmp_path):
    script = "/finetune start file-sample provider=fireworks suffix=fw-demo\n"
    result = _run(script, tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Fireworks AI" in out and out.count("FINE-TUNING JOB SUCCEEDED") == 1
    assert re.search(r"```accounts/sandbox/models/fw-demo-ftb-[0-9a-f]+```", out), out


@pytest.mark.heavy(8)
def test_failure_announcement_and_channels(tmp_path):
    script = "\n".join([
        "/finetune help",
        "/finetune start file-invalid",
        "/channel ml-team",
        "/finetune subscriptions",
        "/finetune status",
        "/finetune bogus",
    ]) + "\n"
    result = _run(script, tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "/finetune start [training_file_id]" in out
    assert "FINE-TUNING JOB FAILED" in out and "invalid training file" in out
    assert "Now in #ml-team." in out
    assert "This channel doesn't follow any fine-tuning jobs" in out  # #ml-team follows nothing
    assert "I don't know the command `bogus`" in out
    assert "[#general] finetune-bot posted:" in out  # the announcement went where the job was started


def test_timeout_says_which_jobs_were_still_running(tmp_path):
    result = _run("/finetune start file-sample\n", tmp_path, timeout=0.5, SANDBOX_PACE_SECONDS="30")
    assert result.returncode == 1
    assert re.search(r"Timed out after 0\.5s; still running: ftjob-", result.stdout)


def test_render_turns_block_kit_into_text():
    message = {"blocks": [
        {"type": "header", "text": {"type": "plain_text", "text": ":x: Failed"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "At <!date^0^{date}|1970-01-01 00:00 UTC> &lt;x&gt;"}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": "*Job*\n`j`"},
                                       {"type": "mrkdwn", "text": "*Fine-tuned* `ft:m`\n*yes*"}]},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "in <#C1>"}]},
    ]}
    assert shell_render.render(message, {"C1": "general"}).splitlines() == [
        "❌ FAILED", "At 1970-01-01 00:00 UTC <x>", "Job: `j`", "Fine-tuned `ft:m`: *yes*", "  in #general"]


def test_the_shell_draws_every_emoji_the_bot_writes():
    root = pathlib.Path(shell_render.__file__).resolve().parent.parent
    written = {code for folder in ("bot", "handlers") for path in (root / folder).rglob("*.py")
               if "sandbox" not in path.parts for code in re.findall(r":[a-z][a-z0-9_+-]*:", path.read_text())}
    assert written and written <= set(shell_render.EMOJI), sorted(written - set(shell_render.EMOJI))


def test_shell_uses_a_configured_provider_and_says_it_is_real(provider, tmp_path):
    out = io.StringIO()
    settings = load({"OPENAI_API_KEY": "sk-test-1234567890abcdef", "OPENAI_BASE_URL": provider.url + "/v1",
                     "DATABASE_PATH": str(tmp_path / "real.db")}, mode="shell", real=True)
    session = shell.Shell(settings, out)
    try:
        assert session.sandbox is None
        assert "REAL jobs, billed" in session.banner()
        session.handle("/finetune list")
        assert provider.requests_to("/fine_tuning/jobs", "GET")
        assert "No fine-tuning jobs yet" in out.getvalue()
    finally:
        session.close()


def test_the_shell_presses_a_button_on_a_reply_only_you_see(provider, tmp_path):
    job = provider.add_job(status="succeeded")
    out = io.StringIO()
    settings = load({"OPENAI_API_KEY": "sk-test-1234567890abcdef", "OPENAI_BASE_URL": provider.url + "/v1",
                     "DATABASE_PATH": str(tmp_path / "real.db")}, mode="shell", real=True)
    session = shell.Shell(settings, out)
    try:
        session.handle(f"/finetune try {job['id']} Hello")
        assert "[Share in channel]" in out.getvalue()
        session.handle("/click Share")
        assert wait_until(lambda: "Shared in the channel." in out.getvalue())
        assert "Shared by @alice" in out.getvalue()
        session.handle("/click Share")  # the reply that had the button was replaced: nothing left to press
        assert out.getvalue().rstrip().endswith("No card or reply with buttons in #general to click.")
    finally:
        session.close()


class _LatePool(ThreadPoolExecutor):
    """A pool whose tasks start half a second late, as on a busy machine."""

    def submit(self, fn, /, *args, **kwargs):  # noqa: ANN001, ANN201 - ThreadPoolExecutor's signature
        def late():  # noqa: ANN202
            time.sleep(0.5)
            return fn(*args, **kwargs)

        return super().submit(late)


def test_a_command_that_opens_a_form_waits_for_it_as_a_person_would(tmp_path):
    """The form is the command's answer: the shell takes the next line (or ends, at the end of its input) only once
    it opened, however late the bot opens it (a piped session once ended before its last form showed)."""
    out = io.StringIO()
    session = shell.Shell(load({"DATABASE_PATH": str(tmp_path / "s.db")}, mode="shell"), out)
    try:
        session.bot.services.prompt = _LatePool(max_workers=1)
        session.handle("/finetune start")
        assert 'opened a form ("Start a job")' in out.getvalue()
    finally:
        session.close()


def test_the_shell_prints_no_warnings_before_its_banner(tmp_path):
    result = _run("/finetune help\n", tmp_path, fresh=True)  # (the libraries' import-time warnings included)
    assert result.stdout.startswith("finetune-bot shell.") and result.stderr == ""


@pytest.mark.heavy(8)
def test_check_and_upload_a_local_file_through_the_form(tmp_path):
    clean = tmp_path / "support.jsonl"
    clean.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Q{n}"},
                                                      {"role": "assistant", "content": f"A{n}"}]}) + "\n"
                             for n in range(10)))
    broken = tmp_path / "my broken.jsonl"  # a name with a space, quoted as in a terminal
    broken.write_text('{"messages": [{"role": "robot", "content": "x"}]}\nnot json\n')
    script = f"/finetune check '{broken}'\n/finetune upload {clean}\n/finetune start\n"
    result = _run(script, tmp_path, timeout=30)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "*my broken.jsonl* has problems to fix; nothing was uploaded." in out
    assert "a message with an unknown role: 1 (line 1)" in out and "not valid JSON: 1 (line 2)" in out
    assert "support.jsonl* is ready." in out and "(clicking [Upload to OpenAI])" in out
    assert re.search(r"Uploaded \*support\.jsonl\* to OpenAI: `file-[0-9a-f]+`", out), out
    assert 'opened a form ("Start a job")' in out and "use /finetune check PATH" in out


@pytest.mark.heavy(7)
def test_the_shell_shows_the_card_its_edits_and_its_thread_and_presses_its_buttons(tmp_path):
    script = "/finetune start file-sample suffix=demo\n/click Refresh\n/click Events\n/click Cancel\n"
    result = _run(script, tmp_path, SANDBOX_PACE_SECONDS="3")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    job_id = re.search(r"ftjob-[0-9a-f]+", out)[0]
    card = out.index("[#general] finetune-bot posted:\n  🔍 FINE-TUNING JOB: IN PROGRESS")
    assert "  [Refresh]  [Events]  [Cancel job]" in out[card:]
    assert re.search(r"\[#general\] finetune-bot replaced the message you clicked:\n  \S+ FINE-TUNING JOB: IN PROGRESS",
                     out)  # Refresh redraws the card (whichever status the job has reached)
    assert '(Slack asks: "Cancel this job?"' in out and "you chose [Cancel job]" in out
    # The outcome: a reply in the card's thread (indented under it), also sent to the channel; then the card edited.
    reply = out.index(f"[#general]   ↳ reply in the thread of {job_id}, also sent to the channel:")
    assert out[reply:].split("\n")[1].startswith("      🚫 FINE-TUNING JOB CANCELLED")
    assert f"[#general] finetune-bot updated its card of {job_id}:\n  🚫 FINE-TUNING JOB: CANCELLED" in out
    assert "The card has no" not in out and "No card" not in out


def test_the_shell_presses_a_succeeded_cards_try_it(tmp_path):
    out = io.StringIO()
    settings = load({"DATABASE_PATH": str(tmp_path / "s.db"), "SANDBOX_PACE_SECONDS": "0.1"}, mode="shell")
    session = shell.Shell(settings, out)
    try:
        session.bot.start_background()
        session.handle("/finetune start file-sample")
        assert session._wait(lambda: [c for c in session.slack.cards_in(shell.channel_id("general"))
                                      if "succeeded" in c["text"]], 30)
        session.handle("/click Try")
        assert session._wait(lambda: "opened a form" in out.getvalue(), 10)
        said = out.getvalue()
        assert 'give it after the label, e.g. /click "Try it"' in said and "cannot pick files" not in said
        session.handle('/click "Try it" What is the capital of France?')
        assert session._wait(lambda: "[form] Try the model:" in out.getvalue(), 20), out.getvalue()
        answers = out.getvalue().split("[form] Try the model:")[1]
        assert "What is the capital of France?" in answers and "ft:gpt-4.1-mini-2025-04-14:sandbox:" in answers
        assert "Fine-tuned" in answers and "Base" in answers and "[Share in channel]" in answers
    finally:
        session.close()


def test_the_shell_says_what_was_wrong_with_input_it_does_not_take(tmp_path):
    out = io.StringIO()
    session = shell.Shell(load({"DATABASE_PATH": str(tmp_path / "s.db")}, mode="shell"), out)
    try:
        for line, answer in [("/foo", "/foo is not a command here. Try /finetune help"),
                             ("hello bot", "The bot only hears slash commands"),
                             ("/channel", "/channel needs a name, e.g. /channel ml-team"),
                             ("/user  ", "/user needs a name, e.g. /user bob"),
                             ("/click", "/click needs a label, e.g. /click Refresh")]:
            before = len(out.getvalue())
            session.handle(line)
            said = out.getvalue()[before:]
            assert answer in said and "Type what you would type in Slack" not in said, (line, said)
    finally:
        session.close()


def test_a_bare_click_presses_the_newest_message_with_that_button(provider, tmp_path):
    first, second = provider.add_job(status="running"), provider.add_job(status="running")
    out = io.StringIO()
    settings = load({"OPENAI_API_KEY": "sk-test-1234567890abcdef", "OPENAI_BASE_URL": provider.url + "/v1",
                     "DATABASE_PATH": str(tmp_path / "real.db")}, mode="shell", real=True)
    session = shell.Shell(settings, out)
    try:
        session.handle(f"/finetune status {first['id']}")  # a reply with buttons, only for me
        session.handle(f"/finetune subscribe {second['id']}")  # then a card, newer
        assert session._wait(lambda: session.slack.cards_in(shell.channel_id("general")), 10)
        before = len(provider.received)
        session.handle("/click Refresh")
        asked = [r.path for r in provider.received[before:] if r.method == "GET"]
        assert asked and all(second["id"] in path for path in asked), asked
    finally:
        session.close()


@pytest.mark.heavy(11)
def test_the_sandbox_moves_an_openai_fine_tune_to_together_and_fireworks_and_compares_them(tmp_path):
    """Moving off OpenAI, as the README shows it: a sandbox OpenAI job succeeds, moves to the Together and Fireworks
    sandboxes, both succeed, and compare puts each beside the original."""
    script = ("/finetune start file-sample suffix=demo\n/wait\n/finetune move $JOB1 to=together\n"
              "/finetune move $JOB1 to=fireworks\n/wait\n/finetune compare $JOB1 $JOB2 n=2\n"
              "/finetune compare $JOB1 $JOB3 n=2\n/finetune retiring\n")
    result = _run(script, tmp_path, timeout=90)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("FINE-TUNING JOB SUCCEEDED") == 3, out
    assert "Moving `ftjob-" in out and "from OpenAI to Together AI" in out and "from OpenAI to Fireworks AI" in out
    assert out.count("[Compare with the original]") == 2 and out.count("TWO FINE-TUNES COMPARED") == 2
    assert "at Together AI (✅ completed)" in out and "at Fireworks AI (✅ completed)" in out
    assert "FINE-TUNES AT RISK" in out and "2027-01-06" in out and "Already moved to" in out



@pytest.mark.heavy(10)
def test_an_exported_key_never_makes_the_quick_start_spend_money(tmp_path):
    """Issue 29: with OPENAI_API_KEY exported (as many developers have it) the shell silently started real, billed
    jobs. It uses the sandbox unless asked for real providers, says which at the top, and takes --sandbox too."""
    env = {**os.environ, "OPENAI_API_KEY": "sk-real-looking-key-1234567890", "TOGETHER_API_KEY": "tgp_real",
           "SANDBOX_PACE_SECONDS": "0.2"}
    for flags, run in (([], subprocess.run), (["--sandbox"], zygote.run)):  # (the Quick start as typed: exec'd)
        kwargs = {"capture_output": True, "text": True} if run is subprocess.run else {}
        result = run([sys.executable, "-m", "bot", "shell", *flags, "--timeout", "30"], input="/finetune providers\n",
                     timeout=60, cwd=tmp_path, env=env, **kwargs)
        assert result.returncode == 0, result.stderr
        head = result.stdout.split("\n", 3)[1]
        assert head.startswith("Provider: SANDBOX") and "REAL" not in result.stdout
        assert "--real" in result.stdout


def test_real_providers_are_every_configured_one_alike_and_only_with_real(fireworks, tmp_path):
    env = {"FIREWORKS_API_KEY": "fw-key", "FIREWORKS_ACCOUNT_ID": fireworks.account,
           "FIREWORKS_BASE_URL": fireworks.url, "DATABASE_PATH": str(tmp_path / "real.db")}
    assert load(env, mode="shell").sandbox  # no flag: the sandbox, whatever is exported
    settings = load(env, mode="shell", real=True)
    session = shell.Shell(settings, io.StringIO())
    try:
        assert session.sandbox is None and "REAL jobs, billed" in session.banner()
        assert "FIREWORKS" in session.banner().upper()
    finally:
        session.close()
    import pytest

    from bot.config import ConfigError
    with pytest.raises(ConfigError, match="--real needs a provider's settings"):
        load({}, mode="shell", real=True)
