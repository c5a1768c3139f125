"""Moving fine-tunes from buttons: a move's Pick the training file…, a fine-tune at risk's Move… and its form, and a
moved job's Compare with the original. Each acks at once; the work runs after, on the bot's pools."""

from __future__ import annotations

import html
import json

from slack_bolt import App

from bot.commands import Command
from bot.data_flow import pass_on_from_form
from bot.jobs import Caller
from bot.messages.answers import format_note, format_refusal, format_replay
from bot.messages.jobs import COMPARE_ORIGINAL_ACTION
from bot.move_messages import MOVE_OPEN_ACTION, MOVE_PICK_ACTION
from bot.values import ID_PATTERN, PROVIDER_PATTERN
from bot.views import MOVE_CALLBACK, move_done_view
from handlers.errors import apologizing
from handlers.replies import caller_of_click, first_sight, replier


def register(app: App, services) -> None:
    app.action(MOVE_PICK_ACTION)(make_pick_listener(services))
    app.action(MOVE_OPEN_ACTION)(make_open_listener(services))
    app.view(MOVE_CALLBACK)(make_submission_listener(services))
    app.action(COMPARE_ORIGINAL_ACTION)(make_compare_listener(services))


def _value(action: dict) -> dict:
    try:
        value = json.loads(html.unescape(action.get("value") or "{}"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _refused(services, caller: Caller, command: str) -> bool:
    """Whether the allow-lists refuse this click's command here; the clicker is told so (after the ack)."""
    refusal = services.jobs.refusal(Command(command, {}), caller)
    if refusal:
        services.background.submit(replier(services, caller), format_refusal(refusal))
    return bool(refusal)


def _job_of(target: dict, job: str = "job", provider: str = "provider") -> tuple[str, str | None] | None:
    job_id, name = str(target.get(job) or ""), str(target.get(provider) or "")
    if not ID_PATTERN.fullmatch(job_id) or (name and not PROVIDER_PATTERN.fullmatch(name)):
        return None  # not a button of ours
    return job_id, name or None


def make_pick_listener(services):
    """A move whose file its provider keeps: the training-data form, filled in with what the move kept."""
    def pick_clicked(ack, body, action):  # noqa: ANN001 - Bolt injects by name
        ack()
        move_id = str(_value(action).get("move") or "")
        if not move_id.startswith("mv-") or not ID_PATTERN.fullmatch(move_id):
            return
        services.prompt.submit(_pick, services, caller_of_click(body), move_id, body)

    return pick_clicked


def _pick(services, caller: Caller, move_id: str, body: dict) -> None:
    send = replier(services, caller)
    with apologizing(send, "the Pick the training file button"):
        if not first_sight(services, body):
            return  # a replayed click opens no second form
        refusal = services.jobs.refusal(Command("move", {}), caller)
        move = services.store.moves.get(move_id)
        if refusal or move is None or move["team_id"] != caller.team_id:
            send(format_refusal(refusal or "That move is not known here."))
            return
        if move["state"] != "needs_file":
            send(format_note("That move already went on; `/finetune status` shows its job."))
            return
        problem = services.data.open_form("start", caller, str(body.get("trigger_id") or ""),
                                          provider=move["target_provider"], move=move)
        if problem:
            send(format_refusal(problem))


def make_open_listener(services):
    """A fine-tune at risk's Move…: the small form (target, base model, estimate)."""
    def move_clicked(ack, body, action):  # noqa: ANN001 - Bolt injects by name
        ack()
        found = _job_of(_value(action))
        if found is None:
            return
        caller = caller_of_click(body)
        if not _refused(services, caller, "move"):
            services.prompt.submit(_open, services, caller, *found, body)

    return move_clicked


def _open(services, caller: Caller, job_id: str, provider: str | None, body: dict) -> None:
    send = replier(services, caller)
    with apologizing(send, "the Move button"):
        if not first_sight(services, body):
            return
        problem, then = services.moves.open_form(services.slack, caller, job_id, provider,
                                                 str(body.get("trigger_id") or ""))
        if problem:
            send(format_refusal(problem))
        if then is not None:
            services.background.submit(then)  # the estimate: a file read, never on the forms' pool


def make_submission_listener(services):
    def move_submitted(ack, body, view):  # noqa: ANN001 - Bolt injects by name
        answer, then = services.moves.form_submitted(view, (body.get("user") or {}).get("id", ""))
        ack(**answer)
        if then is not None:
            services.background.submit(_carry_out, services, str(view.get("id")), then)

    return move_submitted


def _carry_out(services, view_id: str, move) -> None:  # noqa: ANN001 - the move to carry out
    with apologizing(lambda m: services.slack.update_view(view_id, move_done_view(m)), "the Move form"):
        message, caller = move()
        services.slack.update_view(view_id, move_done_view(services.decorate(message)))
        pass_on_from_form(services.slack, caller, services.decorate(message))


def make_compare_listener(services):
    """A moved job's success: the original and the moved fine-tune on the same examples, in the thread."""
    def compare_clicked(ack, body, action):  # noqa: ANN001 - Bolt injects by name
        ack()
        target = _value(action)
        moved, original = _job_of(target), _job_of(target, "from_job", "from_provider")
        if moved is None or original is None:
            return
        caller = caller_of_click(body)
        if _refused(services, caller, "compare"):
            return
        container, clicked = body.get("container") or {}, body.get("message") or {}
        thread = str(container.get("thread_ts") or clicked.get("thread_ts") or container.get("message_ts")
                     or clicked.get("ts") or "") or None
        services.background.submit(_compare, services, caller, original, moved, thread, body)

    return compare_clicked


def _compare(services, caller: Caller, original: tuple, moved: tuple, thread: str | None, body: dict) -> None:
    send = replier(services, caller)
    with apologizing(send, "the Compare with the original button"):
        if not first_sight(services, body):
            send(format_replay())
            return
        message = services.run(Command("compare", {"job_id": original[0], "other_job": moved[0],
                                                   **({"provider": original[1]} if original[1] else {})}), caller)
        services.slack.post(caller.channel_id, services.decorate(message), thread_ts=thread)
