"""The /finetune grammar: the parser and the help text come from one table."""

from __future__ import annotations

import html
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.commands import BY_NAME, MAX_COMMAND_LENGTH, SUBCOMMANDS, Command, Problem, parse
from bot.messages.answers import format_help


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", Command("help")),
        ("help", Command("help")),
        ("HELP", Command("help")),
        ("start file-abc", Command("start", {"training_file": "file-abc"})),
        ("start file-abc model=gpt-4o-mini-2024-07-18 suffix=bot_v1.2 epochs=3 validation=file-v seed=42",
         Command("start", {"training_file": "file-abc", "model": "gpt-4o-mini-2024-07-18", "suffix": "bot_v1.2",
                           "epochs": 3, "validation": "file-v", "seed": 42})),
        ("start   file-abc    EPOCHS=1", Command("start", {"training_file": "file-abc", "epochs": 1})),
        ("status", Command("status")),
        ("status ftjob-abc", Command("status", {"job_id": "ftjob-abc"})),
        ("status ftjob:with.dots_and-dashes", Command("status", {"job_id": "ftjob:with.dots_and-dashes"})),
        ("status 1234-azure-style-id", Command("status", {"job_id": "1234-azure-style-id"})),
        ("list", Command("list")),
        ("list 100", Command("list", {"n": 100})),
        ("cancel ftjob-1", Command("cancel", {"job_id": "ftjob-1"})),
        ("pause ftjob-1", Command("pause", {"job_id": "ftjob-1"})),
        ("resume ftjob-1", Command("resume", {"job_id": "ftjob-1"})),
        ("subscribe ftjob-1", Command("subscribe", {"job_id": "ftjob-1"})),
        ("unsubscribe ftjob-1", Command("unsubscribe", {"job_id": "ftjob-1"})),
        ("subscriptions", Command("subscriptions")),
    ],
)
def test_valid_commands(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize(
    "text, says",
    [
        ("launch file-abc", "I don't know the command `launch`"),
        ("cancel", "`cancel` needs a job_id"),
        ("pause", "`pause` needs a job_id"),
        ("resume", "`resume` needs a job_id"),
        ("subscribe", "`subscribe` needs a job_id"),
        ("unsubscribe", "`unsubscribe` needs a job_id"),
        ("start file-abc epochs=lots", "`epochs` must be a whole number from 1 to 50, not `lots`"),
        ("start file-abc epochs=0", "from 1 to 50"),
        ("start file-abc epochs=51", "from 1 to 50"),
        ("start file-abc seed=-1", "`seed` must be a whole number from 0 to 2147483647"),
        ("start file-abc suffix=" + "x" * 65, "`suffix` must be up to 64 letters"),
        ("start file-abc suffix=has/slash", "`suffix` must be up to 64 letters"),
        ("start file-abc temperature=2", "`start` has no option `temperature`"),
        ("start file-abc learning_rate=2", "`learning_rate` must be a number above 0 and at most 1"),
        ("start file-abc learning_rate=1e-5e", "`learning_rate` must be a number"),
        ("start file-abc lora=maybe", "`lora` must be `true` or `false`"),
        ("start file-abc provider=Open/AI", "`provider` must be a provider's name"),
        ("list provider=", "`provider` must be a provider's name"),
        ("start file-abc epochs=1 epochs=2", "`epochs` is given twice"),
        ("start file-abc file-def", "`start` doesn't take `file-def`"),
        ("status " + "a" * 201, "is not a valid job_id"),
        ("status ftjob/../../etc", "is not a valid job_id"),
        ("status <!channel>", "is not a valid job_id"),
        ("status a b", "`status` doesn't take `b`"),
        ("list many", "is not a valid n"),
        ("list 0", "from 1 to 100"),
        ("list 101", "from 1 to 100"),
        ("subscriptions all", "`all` is not a valid page"),
        ("subscriptions 2 3", "`subscriptions` doesn't take `3`"),
        ("status ..", "is not a valid job_id"),  # would name another path at the provider
        ("cancel ..", "is not a valid job_id"),
        ("status .", "is not a valid job_id"),
        ("subscribe -x", "is not a valid job_id"),
        ("x" * (MAX_COMMAND_LENGTH + 1), "the most I read is 4000"),
    ],
)
def test_bad_input_says_what_was_wrong(text, says):
    problem = parse(text)
    assert isinstance(problem, Problem)
    assert says in problem.message


def test_problems_show_usage_of_the_subcommand():
    problem = parse("start file-abc epochs=lots")
    assert problem.usage == BY_NAME["start"].usage
    assert problem.usage.startswith("/finetune start [training_file_id] [provider=<name>] [model=<name>]")


def test_help_lists_every_subcommand_from_the_table():
    message = format_help()
    shown = json.dumps(message.blocks)
    for spec in SUBCOMMANDS:
        # Every usage in the fallback text (within Slack's 3,000 characters); every summary beside it in the blocks.
        assert spec.usage in html.unescape(message.text) and json.dumps(spec.summary)[1:-1] in shown
    assert not message.text.endswith("…")


def test_only_changing_commands_are_costly():
    assert {s.name for s in SUBCOMMANDS if s.costly} == {"start", "cancel", "pause", "resume", "upload", "try",
                                                         "compare", "move"}


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300) | st.lists(
    st.sampled_from([s.name for s in SUBCOMMANDS] + ["epochs=3", "suffix=a", "x=1", "ftjob-1", "=", "==", "99",
                                                     "seed=", "model=m", "n", "\u200b", "<@U1>"]),
    max_size=8).map(" ".join))
def test_parser_never_raises_and_always_answers(text):
    result = parse(text)
    assert isinstance(result, (Command, Problem))
    if isinstance(result, Problem):
        assert result.message.strip()
    else:
        assert result.name in BY_NAME
        for value in result.args.values():
            assert isinstance(value, (int, str)) and value != ""


def test_a_near_miss_gets_a_suggestion():
    assert "Did you mean `/finetune status`?" in parse("stauts ftjob-1").message
    assert "Did you mean" not in parse("xyzzy").message


def test_amounts_take_thousands_separators_only_where_they_belong():
    usd = BY_NAME["settings"].options[5]
    assert usd.name == "confirm_above"
    assert usd.convert("1,000.50") == 1000.5 and usd.convert("$250") == 250 and usd.convert("off") == "off"
    assert usd.convert("0.001") == 0.001  # (a sandbox start's estimate is under a cent)
    for raw in ("1,0,0", "10,00", ",100", "1,000,00", "1.00005"):
        assert usd.convert(raw) is None, raw



def test_help_and_usage_name_each_option_once():
    """Issue 29: `learning_rate` appeared twice in help and in every start usage error (two shapes declare it)."""
    parse("help")  # (the shapes' options are taken in)
    usage = BY_NAME["start"].usage
    assert usage.count("learning_rate=") == 1 and usage.count("lora_rank=") == 1 and usage.count("lora=") == 1
    assert html.unescape(format_help().text).count("[learning_rate=") == 1
