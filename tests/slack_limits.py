"""Slack's documented limits for messages and views, checked on what the bot builds: first by slack_sdk's own models
(which know most of them), then by the rules below, which the models do not enforce (Block Kit reference,
api.slack.com/reference/block-kit: blocks, composition objects, block elements, and views)."""

from __future__ import annotations

import json

from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

# (element or object type, field) -> most characters, as Slack documents them.
TEXT_LIMITS = {
    ("section", "text"): 3000,
    ("header", "text"): 150,
    ("button", "text"): 75,
    ("button", "value"): 2000,
    ("button", "action_id"): 255,
    ("button", "url"): 3000,
    ("confirm", "title"): 100,
    ("confirm", "text"): 300,
    ("confirm", "confirm"): 30,
    ("confirm", "deny"): 30,
    ("option", "text"): 75,
    ("option", "value"): 150,
    ("input", "label"): 2000,
    ("input", "hint"): 2000,
    ("plain_text_input", "placeholder"): 150,
    ("view", "title"): 24,
    ("view", "submit"): 24,
    ("view", "close"): 24,
    ("view", "private_metadata"): 3000,
    ("view", "callback_id"): 255,
}
FIELD_LIMIT = 2000
MAX_FIELDS = 10
MAX_INPUT_LENGTH = 3000
MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_ACTIONS = 25
MAX_CONTEXT_ELEMENTS = 10
MAX_OPTIONS = 100
MAX_BLOCK_ID = 255


def _text(value) -> str:
    return value.get("text", "") if isinstance(value, dict) else str(value or "")


def _check_limit(kind: str, name: str, value, where: str) -> None:
    limit = TEXT_LIMITS.get((kind, name))
    if limit is not None and value is not None:
        assert len(_text(value)) <= limit, f"{where}: {kind}.{name} is {len(_text(value))} characters (at most {limit})"


def _walk_element(element: dict, where: str) -> None:
    kind = element.get("type", "")
    for name in ("text", "value", "action_id", "url", "placeholder"):
        _check_limit(kind, name, element.get(name), where)
    if "confirm" in element:
        for name in ("title", "text", "confirm", "deny"):
            _check_limit("confirm", name, element["confirm"].get(name), where)
    for limit_name in ("max_length", "min_length"):
        if limit_name in element:
            assert element[limit_name] <= MAX_INPUT_LENGTH, f"{where}: {kind}.{limit_name} {element[limit_name]}"
    options = element.get("options") or []
    assert len(options) <= MAX_OPTIONS, f"{where}: {len(options)} options"
    for option in options + ([element["initial_option"]] if element.get("initial_option") else []):
        _check_limit("option", "text", option.get("text"), where)
        _check_limit("option", "value", option.get("value"), where)


def _walk_blocks(blocks: list[dict], where: str) -> None:
    for index, block in enumerate(blocks):
        at = f"{where} block {index} ({block.get('type')})"
        assert len(str(block.get("block_id", ""))) <= MAX_BLOCK_ID, at
        kind = block.get("type")
        if kind in {"section", "header"}:
            _check_limit(kind, "text", block.get("text"), at)
        for field in block.get("fields") or []:
            assert len(_text(field)) <= FIELD_LIMIT, f"{at}: a field of {len(_text(field))} characters"
        assert len(block.get("fields") or []) <= MAX_FIELDS, at
        if kind == "actions":
            assert len(block["elements"]) <= MAX_ACTIONS, at
        if kind == "context":
            assert len(block["elements"]) <= MAX_CONTEXT_ELEMENTS, at
            for element in block["elements"]:
                assert len(_text(element)) <= 3000, at
        if kind == "input":
            _check_limit("input", "label", block.get("label"), at)
            _check_limit("input", "hint", block.get("hint"), at)
        for element in (block.get("elements") or []) + [block[k] for k in ("element", "accessory") if k in block]:
            if isinstance(element, dict):
                _walk_element(element, at)


def assert_within_slack_limits(payload: dict, *, kind: str) -> None:
    """Fail, naming the part, when a message (`kind="message"`: text and blocks) or a modal (`kind="view"`) breaks a
    limit Slack documents; slack_sdk's models check the payload first."""
    blocks = payload.get("blocks") or []
    if kind == "view":
        View(**{k: v for k, v in payload.items() if k in {"type", "title", "blocks", "close", "submit",
                                                          "private_metadata", "callback_id"}}).validate_json()
        assert len(blocks) <= MAX_VIEW_BLOCKS, f"a view of {len(blocks)} blocks"
        for name in ("title", "submit", "close", "private_metadata", "callback_id"):
            _check_limit("view", name, payload.get(name), "view")
    else:
        for block in blocks:
            Block.parse(block).validate_json()
        assert len(blocks) <= MAX_MESSAGE_BLOCKS, f"a message of {len(blocks)} blocks"
        assert len(payload.get("text") or "") <= 40_000
    _walk_blocks(blocks, kind)
    json.dumps(payload)  # and it can be sent at all
