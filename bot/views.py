"""Slack modals as pure functions: the training-data form and its report, the Try it form and its answers."""

from __future__ import annotations

from collections.abc import Sequence

from bot.messages.blocks import MAX_INPUT_LENGTH, Message, code, context_block, escape, section_block, sections_of_lines
from bot.messages.jobs import TRY_CALLBACK
from bot.providers.types import provider_label

# Why a form's submission is not acted on, shown under the form's first field.
FORM_REFUSALS = {
    "unknown": "This form has expired or was not opened by this bot. Open it again.",
    "not_yours": "Only the person who opened this form can send it.",
    "submitted": "This form was already sent; its answers are on their way.",
}


# -- training data: the modal, its report, and its outcome ------------------------------------------------------

DATA_CALLBACK = "finetune_data"
DATA_CONFIRM_ACTION = "finetune_data_confirm"
# A modal's title: at most 24 characters (Slack's limit); at most 100 blocks and 3,000 characters of metadata.
DATA_TITLES = {"start": "Start a job", "check": "Check training data", "upload": "Upload training data"}


def _modal(mode: str, blocks: list[dict], *, metadata: str = "", submit: str | None = None) -> dict:
    view = {"type": "modal", "callback_id": DATA_CALLBACK, "title": {"type": "plain_text", "text": DATA_TITLES[mode]},
            "close": {"type": "plain_text", "text": "Close"}, "blocks": blocks[:100], "private_metadata": metadata}
    if submit:
        view["submit"] = {"type": "plain_text", "text": submit}
    return view


def _file_input(block_id: str, label: str, *, optional: bool = False) -> dict:
    return {"type": "input", "block_id": block_id, "optional": optional,
            "label": {"type": "plain_text", "text": label},
            "element": {"type": "file_input", "action_id": "file", "filetypes": ["jsonl"], "max_files": 1}}


def data_form_view(mode: str, *, provider: str, models: Sequence[str], default_model: str, metadata: str,
                   intro: str = "", suffix: str | None = None, epochs: int | None = None) -> dict:
    """The form: a training file (and for a start, a validation file, the base model, suffix and epochs, filled in
    with what a move kept)."""
    where = provider_label(provider)
    lead = escape(intro) + "\n" if intro else ""
    blocks = [section_block(f"{lead}Pick a `.jsonl` file. I check it before anything is uploaded to "
                            f"{escape(where)}: format, errors with line numbers, tokens and the estimated price."),
              _file_input("training", "Training file")]
    if mode == "start":
        choices = list(dict.fromkeys([default_model, *models]))[:100]
        options = [{"text": {"type": "plain_text", "text": m[:75]}, "value": m[:150]} for m in choices]
        blocks += [
            _file_input("validation", "Validation file (optional)", optional=True),
            {"type": "input", "block_id": "model", "label": {"type": "plain_text", "text": f"Base model at {where}"},
             "element": {"type": "static_select", "action_id": "value", "options": options,
                         "initial_option": options[0]}},
            {"type": "input", "block_id": "suffix", "optional": True,
             "label": {"type": "plain_text", "text": "Suffix for the model's name (optional)"},
             "element": {"type": "plain_text_input", "action_id": "value", "max_length": 64,
                         **({"initial_value": suffix[:64]} if suffix else {})}},
            {"type": "input", "block_id": "epochs", "optional": True,
             "label": {"type": "plain_text", "text": "Epochs (optional; the provider's default otherwise)"},
             "element": {"type": "number_input", "action_id": "value", "is_decimal_allowed": False,
                         "min_value": "1", "max_value": "50",
                         **({"initial_value": str(epochs)} if epochs and 1 <= epochs <= 50 else {})}},
        ]
    return _modal(mode, blocks, metadata=metadata, submit="Check")


def data_progress_view(mode: str, sentence: str, *, metadata: str = "") -> dict:
    """A modal saying what is being done (checking, uploading, starting), while it is done."""
    return _modal(mode, [section_block(f":hourglass_flowing_sand: {escape(sentence)}")], metadata=metadata)


def data_report_view(mode: str, report_lines: Sequence[str], *, filename: str, ok: bool, metadata: str,
                     confirm: str | None = None) -> dict:
    """The check's report, escaped line by line; with a button that states the estimate when there is a next step."""
    head = (f":white_check_mark: *{escape(filename)}* is ready." if ok else
            f":x: *{escape(filename)}* has problems to fix; nothing was uploaded.")
    body = [escape(line).replace("  ", "\u2003", 1) if line.startswith("  ") else escape(line)
            for line in report_lines]
    blocks = [section_block(head), *sections_of_lines(body, per=8)]
    if ok and confirm:
        blocks.append({"type": "actions", "block_id": "confirm", "elements": [
            {"type": "button", "action_id": DATA_CONFIRM_ACTION, "style": "primary", "value": mode,
             "text": {"type": "plain_text", "text": confirm[:75]}}]})
    return _modal(mode, blocks[:100], metadata=metadata)


def data_done_view(mode: str, mrkdwn: str) -> dict:
    """The last word in the modal: what was uploaded or started, or why not (already escaped by the caller)."""
    return _modal(mode, [section_block(mrkdwn)])


def try_modal_view(*, model: str, metadata: str, max_prompt_chars: int) -> dict:
    longest = min(max_prompt_chars, MAX_INPUT_LENGTH)
    return {"type": "modal", "callback_id": TRY_CALLBACK, "title": {"type": "plain_text", "text": "Try the model"},
            "submit": {"type": "plain_text", "text": "Ask both models"},
            "close": {"type": "plain_text", "text": "Close"}, "private_metadata": metadata,
            "blocks": [
                section_block(f"Your prompt goes to {code(model)} and to its base model, side by side."),
                {"type": "input", "block_id": "prompt", "label": {"type": "plain_text", "text": "Prompt"},
                 "element": {"type": "plain_text_input", "action_id": "value", "multiline": True,
                             "max_length": longest}},
                {"type": "input", "block_id": "system", "optional": True,
                 "label": {"type": "plain_text", "text": "System message (optional)"},
                 "element": {"type": "plain_text_input", "action_id": "value", "multiline": True,
                             "max_length": longest}},
            ]}


def try_result_view(message: Message) -> dict:
    return {"type": "modal", "callback_id": TRY_CALLBACK, "title": {"type": "plain_text", "text": "Try the model"},
            "close": {"type": "plain_text", "text": "Close"}, "blocks": message.blocks[:100]}


# -- moving a fine-tune: the small form a Move… button opens ----------------------------------------------------

MOVE_CALLBACK = "finetune_move"


def move_form_view(*, job_id: str, source: str, base: str, targets: Sequence[str], model: str | None, metadata: str,
                   estimate: str) -> dict:
    """Where to move a fine-tune (the configured providers), the base model there (filled from the mapping: empty
    means the nearest), and the estimate; moved on submit, exactly as `/finetune move` does."""
    options = [{"text": {"type": "plain_text", "text": provider_label(t)[:75]}, "value": t[:150]} for t in targets]
    model_element = {"type": "plain_text_input", "action_id": "value", "max_length": 256,
                     **({"initial_value": model[:256]} if model else {})}
    blocks = [
        section_block(f"Re-train {code(job_id)} (base {code(base)} at {escape(provider_label(source))}) at another "
                      "provider: its training file is copied there and checked, then started as `/finetune start` "
                      "does (this channel's confirm_above, budget and approvers apply)."),
        {"type": "input", "block_id": "target", "label": {"type": "plain_text", "text": "Move to"},
         "element": {"type": "static_select", "action_id": "value", "options": options[:100],
                     "initial_option": options[0]}},
        {"type": "input", "block_id": "model", "optional": True,
         "label": {"type": "plain_text", "text": "Base model there (empty: the nearest)"}, "element": model_element},
        context_block(escape(estimate)),
    ]
    return {"type": "modal", "callback_id": MOVE_CALLBACK, "title": {"type": "plain_text", "text": "Move a fine-tune"},
            "close": {"type": "plain_text", "text": "Close"}, "submit": {"type": "plain_text", "text": "Move"},
            "blocks": blocks, "private_metadata": metadata}


def move_done_view(message: Message) -> dict:
    """The move's answer in its form (escaped where it was made)."""
    return {"type": "modal", "callback_id": MOVE_CALLBACK, "title": {"type": "plain_text", "text": "Move a fine-tune"},
            "close": {"type": "plain_text", "text": "Close"},
            "blocks": [b for b in message.blocks if b.get("type") != "actions"][:100] or [section_block(message.text)]}
