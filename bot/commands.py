"""The `/finetune` grammar: one table of subcommands that drives both the parser and the help text."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from bot.values import Value

MAX_COMMAND_LENGTH = 4000  # Slack's own limit for a slash command's text


@dataclass(frozen=True)
class Subcommand:
    name: str
    summary: str
    positional: tuple[Value, ...] = ()
    optional_positional: tuple[Value, ...] = ()
    options: tuple[Value, ...] = ()
    rest: str | None = None  # the name of free text that ends the command (a prompt), taken as typed
    costly: bool = False  # starts, stops, changes or runs something billed: ALLOWED_USER_IDS / ALLOWED_CHANNEL_IDS
    past: str = ""  # what a job is once this is done to it ("cancelled"), for replies and refusals
    service: str = "jobs"  # which service does it (an attribute of bot.app.Services): jobs, holds, subscriptions, …
    doing: str = ""  # what the bot was doing, for "Could not …" when a provider refuses ("cancel", "list jobs")

    @property
    def usage(self) -> str:
        words = [f"/finetune {self.name}"]
        words += [f"<{v.placeholder or v.name}>" for v in self.positional]
        words += [f"[{v.placeholder or v.name}]" for v in self.optional_positional]
        words += [f"{v.name}=<{v.placeholder or v.kind}>" if v.required else f"[{v.name}=<{v.placeholder or v.kind}>]"
                  for v in self.options]
        if self.rest:
            words.append(f"<{self.rest}…>")
        return " ".join(words)


_JOB_ID = Value("job_id", "id")
# Which provider a job is at: needed only when two configured providers use the same job id.
_PROVIDER = Value("provider", "provider", placeholder="name")
_DM = Value("where", "dm", placeholder="dm")
SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand(
        "start",
        "Start a fine-tuning job (at the default provider unless you name one); this channel is told when it "
        "finishes. With no file id: a form to pick a .jsonl file, checked (and priced) before anything is uploaded.",
        optional_positional=(Value("training_file", "id", placeholder="training_file_id"),),
        options=(
            _PROVIDER,
            Value("model", "model", placeholder="name"),
            Value("suffix", "suffix", placeholder="text"),
            Value("epochs", "int", 1, 50, placeholder="n"),
            Value("validation", "id", placeholder="file_id"),
            Value("seed", "int", 0, 2**31 - 1, placeholder="n"),
        ),
        costly=True,
        past="started",
        doing="start a job from",
    ),
    Subcommand("status", "Where a job stands; with no id, the jobs this channel follows.",
               optional_positional=(_JOB_ID,), options=(_PROVIDER,), doing="get the status of"),
    Subcommand("list", "The most recent jobs at every provider, newest first (10 unless you say, at most 100).",
               optional_positional=(Value("n", "int", 1, 100),), options=(_PROVIDER,), doing="list jobs"),
    Subcommand("cancel", "Cancel a job.", positional=(_JOB_ID,), options=(_PROVIDER,), costly=True,
               past="cancelled", doing="cancel"),
    Subcommand("pause", "Pause a running job (where the provider can).", positional=(_JOB_ID,),
               options=(_PROVIDER,), costly=True, past="paused", doing="pause"),
    Subcommand("resume", "Resume a paused job.", positional=(_JOB_ID,), options=(_PROVIDER,), costly=True,
               past="resumed", doing="resume"),
    Subcommand("subscribe", "Follow a job started anywhere: this channel is told when it finishes (with `dm`: you, "
                            "in a direct message).",
               positional=(_JOB_ID,), optional_positional=(_DM,), options=(_PROVIDER,), doing="subscribe to",
               service="subscriptions"),
    Subcommand("unsubscribe", "Stop following a job in this channel (with `dm`: in your direct messages).",
               positional=(_JOB_ID,), optional_positional=(_DM,), options=(_PROVIDER,), doing="unsubscribe from",
               service="subscriptions"),
    Subcommand("providers", "The providers configured here, what each can do, and whether each takes new jobs.",
               doing="list the providers"),
    Subcommand("try", "Your prompt to the fine-tuned model and to its base model, answers side by side (a job id "
                      "stands for its model). Only you see it, with a button to share it.",
               positional=(Value("model_or_job", "model", placeholder="model_or_job_id"),),
               options=(_PROVIDER, Value("deployment", "model", placeholder="deployment_name")),
               rest="prompt", costly=True, past="tried", service="trying", doing="try"),
    Subcommand("compare", "The fine-tuned and the base model on up to n held-out examples (the validation file, else "
                          "the end of the training file), beside the expected answers. With a second job id: the "
                          "two fine-tuned models side by side (a moved fine-tune and its original).",
               positional=(_JOB_ID,), optional_positional=(Value("other_job", "id", placeholder="other_job_id"),),
               options=(_PROVIDER, Value("n", "int", 1, 20)), costly=True, past="compared",
               service="trying", doing="compare"),
    Subcommand("move", "Re-train a fine-tune at another provider: its training file copied there (checked against "
                       "that provider's rules), the nearest base model, the same epochs, then started as `start` "
                       "does (estimate, holds, approvals).",
               positional=(_JOB_ID,),
               options=(Value("to", "provider", placeholder="provider", required=True), _PROVIDER,
                        Value("model", "model", placeholder="base"), Value("suffix", "suffix", placeholder="text"),
                        Value("epochs", "int", 1, 50, placeholder="n"),
                        Value("validation", "id", placeholder="file_id")),
               costly=True, past="moved", service="moves", doing="move"),
    Subcommand("retiring", "The fine-tunes this channel follows that a coming date puts at risk (a provider that "
                           "stops taking jobs, a base model that retires), each with its date and a Move… button.",
               service="moves", doing="list the fine-tunes at risk"),
    Subcommand("settings", "What this channel hears (outcomes, mentions, cards, progress and how often), what a start "
                           "may cost before it needs a click, the month's budget, the watchdog. No options: the "
                           "current settings.",
               options=(Value("outcomes", "choice", placeholder="all|failures", choices=("all", "failures")),
                        Value("mentions", "bool", placeholder="on|off"),
                        Value("cards", "bool", placeholder="on|off"),
                        Value("progress", "bool", placeholder="on|off"),
                        Value("every", "int", 1, 1440, placeholder="minutes"),
                        Value("confirm_above", "usd", 0, 1_000_000, placeholder="USD|off"),
                        Value("budget", "usd", 0, 10_000_000, placeholder="USD|off"),
                        Value("watchdog", "choice", placeholder="off|warn|cancel", choices=("off", "warn", "cancel"))),
               service="subscriptions"),
    Subcommand("chart", "The job's training loss (and validation loss) by step, as a picture in this channel.",
               positional=(_JOB_ID,), options=(_PROVIDER,), service="charts", doing="draw the chart of"),
    Subcommand("check", "Check a .jsonl training file from Slack: its format, errors with line numbers, tokens and "
                        "price. Nothing is uploaded.", options=(_PROVIDER,)),
    Subcommand("upload", "Check a .jsonl training file from Slack and, when it is clean, upload it to a provider; "
                         "replies with its file id.", options=(_PROVIDER,), costly=True, past="uploaded"),
    Subcommand("spend", "What the jobs started from this channel in a month cost (this month by default): "
                        "estimates, actual costs, who started each, totals.",
               optional_positional=(Value("month", "month", placeholder="YYYY-MM"),),
               options=(_PROVIDER, Value("page", "int", 1, 10_000)), doing="count the spend", service="holds"),
    Subcommand("subscriptions", "The jobs this channel follows: running first, then finished, a page at a time.",
               optional_positional=(Value("page", "int", 1, 10_000),), service="subscriptions"),
    Subcommand("keys", "Workspace admins: set, replace or remove this workspace's own provider keys, in a form "
                       "(when the bot is installed in many workspaces).", service="keys"),
    Subcommand("help", "This help."),
)
BY_NAME = {s.name: s for s in SUBCOMMANDS}


def add_start_options(values) -> None:  # noqa: ANN001 - Values declared by provider shapes
    """Take the start options some provider shapes declare (Together's `lora`, …) into `start`'s grammar, once
    each: parsing and help then know them, and the provider's own check says which provider takes which."""
    spec = BY_NAME["start"]
    known = {v.name for v in spec.options}
    extra = tuple({v.name: v for v in values if v.name not in known}.values())  # (once, however many shapes take it)
    if extra:
        object.__setattr__(spec, "options", spec.options + extra)  # the one table, grown by the registry


def _load_shape_options() -> None:
    from bot.providers import registry  # (the registry's adapters import this module)

    add_start_options(registry.start_options())


@dataclass(frozen=True)
class Command:
    name: str
    args: dict[str, str | int | float | bool] = field(default_factory=dict)

    @property
    def spec(self) -> Subcommand:
        return BY_NAME[self.name]


@dataclass(frozen=True)
class Problem:
    """Why a command could not be understood, and how to write it (plain text with `code` spans)."""

    message: str
    usage: str | None = None


def quote(raw: str, limit: int = 40) -> str:
    """A user's word, safe to echo inside a code span: no backticks, no newlines, not too long."""
    text = raw.replace("`", "'").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse(text: str) -> Command | Problem:
    """Read the text after `/finetune`. Never raises: anything not understood becomes a Problem."""
    _load_shape_options()
    if len(text) > MAX_COMMAND_LENGTH:
        return Problem(f"That command is {len(text)} characters long; the most I read is {MAX_COMMAND_LENGTH}.")
    spans = list(re.finditer(r"\S+", text))
    words = [m.group() for m in spans]
    if not words:
        return Command("help")
    name = words[0].lower()
    spec = BY_NAME.get(name)
    if spec is None:
        close = difflib.get_close_matches(name, BY_NAME, n=1, cutoff=0.6)
        hint = f"Did you mean `/finetune {close[0]}`? " if close else ""
        return Problem(f"I don't know the command `{quote(words[0])}`. {hint}"
                       "Try `/finetune help` to see what I can do.")
    args: dict[str, str | int | float | bool] = {}
    positional = list(spec.positional) + list(spec.optional_positional)
    options = {o.name: o for o in spec.options}
    given = 0
    for index, word in enumerate(words[1:], start=1):
        if spec.rest and given == len(positional) and not ("=" in word and word.partition("=")[0].lower() in options):
            args[spec.rest] = text[spans[index].start():].strip()  # the prompt, as typed
            break
        if "=" in word and options:
            key, _, raw = word.partition("=")
            option = options.get(key.lower())
            if option is None:
                allowed = ", ".join(f"`{o}`" for o in options)
                return Problem(f"`{spec.name}` has no option `{quote(key)}`; it takes {allowed}.", spec.usage)
            if option.name in args:
                return Problem(f"`{option.name}` is given twice; give it once.", spec.usage)
            value = option.convert(raw)
            if value is None:
                return Problem(f"`{option.name}` must be {option.describe()}, not `{quote(raw)}`.", spec.usage)
            args[option.name] = value
            continue
        if given >= len(positional):
            before = words[index - 1] if index > 1 else ""
            if "=" in before and before.partition("=")[0].lower() in options:
                return Problem(f"`{quote(word)}` looks like more of `{quote(before)}`: a value can't hold spaces "
                               f"(try `{quote(before)}-{quote(word)}`).", spec.usage)
            return Problem(f"`{spec.name}` doesn't take `{quote(word)}`.", spec.usage)
        slot = positional[given]
        value = slot.convert(word)
        if value is None:
            return Problem(f"`{quote(word)}` is not a valid {slot.placeholder or slot.name}: "
                           f"it must be {slot.describe()}.", spec.usage)
        args[slot.name] = value
        given += 1
    missing = [v for v in spec.positional if v.name not in args]
    if missing:
        return Problem(f"`{spec.name}` needs a {missing[0].placeholder or missing[0].name}.", spec.usage)
    unsaid = [v for v in spec.options if v.required and v.name not in args]
    if unsaid:
        return Problem(f"`{spec.name}` needs `{unsaid[0].name}=<{unsaid[0].placeholder}>`.", spec.usage)
    if spec.rest and not args.get(spec.rest):
        return Problem(f"`{spec.name}` needs a {spec.rest} after the {positional[-1].placeholder}.", spec.usage)
    return Command(spec.name, args)
