"""The sandbox's chat completions, shared by both stand-ins: deterministic, clearly labelled answers.

A base model answers generically. A fine-tuned model answers as one that learnt its training file would: with the
assistant turn of the training example whose conversation matches the question, and generically otherwise. So the
shell's `try` and `compare` show what a real fine-tune shows: the tuned model answering the way the data taught it.
"""

from __future__ import annotations

import json
import secrets
import time

from bot.sandbox.http import Answer, json_answer


def learnt_answers(training_file: bytes) -> dict[str, str]:
    """The final assistant turn of each chat example, keyed by the conversation before it."""
    answers = {}
    for line in training_file.splitlines():
        try:
            messages = json.loads(line).get("messages") or []
        except (ValueError, AttributeError):
            continue
        if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
            answers[_key(messages[:-1])] = str(messages[-1].get("content") or "")
    return answers


def _key(messages: list) -> str:
    return json.dumps([(m.get("role"), m.get("content")) for m in messages if isinstance(m, dict)
                       and m.get("role") != "system"])


def completion(body: dict, *, learnt: dict[str, str] | None) -> Answer:
    """A chat completion in OpenAI's wire format; `learnt` is None for a base model."""
    model = str(body.get("model"))
    messages = body.get("messages") or []
    if not isinstance(messages, list) or not messages:
        return json_answer(400, {"error": {"message": "'messages' must be a non-empty array.",
                                           "type": "invalid_request_error", "param": "messages", "code": None}})
    question = next((str(m.get("content")) for m in reversed(messages)
                     if isinstance(m, dict) and m.get("role") == "user"), "")
    if learnt is not None and _key(messages) in learnt:
        text = learnt[_key(messages)]
    elif learnt is not None:
        text = f"[sandbox fine-tuned model] My short answer to “{question[:200]}”: it depends, but briefly, yes."
    else:
        text = (f"[sandbox base model {model}] Thank you for your question about “{question[:200]}”. "
                "Here is a general, longer answer than a tuned model would give.")
    limit = int(body.get("max_completion_tokens") or body.get("max_tokens") or 4096)
    words = text.split(" ")
    finish = "length" if len(words) > limit else "stop"
    text = " ".join(words[:limit])
    prompt_tokens = sum(len(str(m.get("content") or "").split()) + 3 for m in messages if isinstance(m, dict))
    return json_answer(200, {
        "id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion", "created": int(time.time()),
        "model": model, "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                     "finish_reason": finish, "logprobs": None}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(words[:limit]),
                  "total_tokens": prompt_tokens + len(words[:limit])},
    })


def answer_chat(body: dict, *, jobs, files: dict, name_field: str, succeeded: str, base_models) -> Answer:
    """A stand-in's chat completion: a fine-tuned model (a job whose `name_field` names it and whose status is
    `succeeded`) answers as its training file taught it; a base model generically; any other name is unknown."""
    model = str(body.get("model"))
    tuned = next((j for j in jobs if j.get(name_field) == model and j["status"] == succeeded), None)
    if tuned is None and model not in base_models:
        return unknown_model(model)
    learnt = learnt_answers(files.get(tuned["training_file"], {}).get("_content", b"")) if tuned else None
    return completion(body, learnt=learnt)


def unknown_model(model: str) -> Answer:
    return json_answer(404, {"error": {"message": f"The model `{model}` does not exist or you do not have access to "
                                                  "it.", "type": "invalid_request_error", "param": "model",
                                       "code": "model_not_found"}})
