"""An OpenAI-compatible fine-tuning service on loopback: the shell's sandbox provider and the tests' stand-in.

The real `openai` client talks to it through `base_url`. It keeps files and jobs in memory, moves jobs through
`validating_files -> queued -> running -> succeeded` (each stage lasting `pace` seconds, training three, or only when
a test says),
emits the events the real service emits, and can call a webhook URL, signed as OpenAI signs, when a job ends.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import urllib.request
from importlib import resources

from bot.sandbox.chat import answer_chat
from bot.sandbox.files import FAILING_FILE_ID, SAMPLE_FILE_ID  # noqa: F401 - the stand-ins' files, by id
from bot.sandbox.http import Answer, PacedStandIn, Received, json_answer

FINAL = {"succeeded", "failed", "cancelled"}
MODELS = {
    "babbage-002",
    "davinci-002",
    "gpt-3.5-turbo-0125",
    "gpt-4o-mini-2024-07-18",
    "gpt-4o-2024-08-06",
    "gpt-4.1-2025-04-14",
    "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano-2025-04-14",
}
STEPS = 10
# Training lasts this many paces: long enough for a progress reply to reach the job's thread before it ends.
TRAINING_PACES = 3
# Paths the SDK uses, whichever way the client was built: OpenAI (/v1), Azure v1 (/openai/v1), AzureOpenAI (/openai).
_PREFIX = re.compile(r"^(/openai)?(/v1)?")


def sample_training_file() -> bytes:
    return resources.files("bot.sandbox").joinpath("sample.jsonl").read_bytes()


def _error(status: int, message: str, *, type_: str = "invalid_request_error", param=None, code=None) -> Answer:
    return json_answer(status, {"error": {"message": message, "type": type_, "param": param, "code": code}})


class FineTuningSandbox(PacedStandIn):
    """Files and fine-tuning jobs, OpenAI's wire format, on 127.0.0.1."""

    serves = "openai"  # the provider this stands in for (the name the bot gives its jobs)

    default_model = "gpt-4.1-mini-2025-04-14"
    sample_file = SAMPLE_FILE_ID

    def __init__(
        self,
        *,
        pace: float | None = None,
        clock=time.time,
        azure: bool = False,
        metadata_supported: bool = True,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        organization: str = "org-sandbox",
    ) -> None:
        super().__init__(pace=pace, clock=clock)
        self.azure = azure
        self.metadata_supported = metadata_supported
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.organization = organization
        self.refuse_new_jobs: tuple[int, str] | None = None
        self.refuse_models: dict[str, tuple[int, str]] = {}  # model -> (status, message) its chat answers with
        self.chat_latency: dict[str, float] = {}  # model -> seconds its chat answers take
        self.webhooks_sent: list[dict] = []
        # Each API key its own account, as at OpenAI: a job made with `_account=KEY` (add_job) is listed and read only
        # with that key; with `accounts` on, a job created through the API belongs to the key that created it.
        self.accounts = False
        self._order = 0
        self.add_file(SAMPLE_FILE_ID, "sample.jsonl", sample_training_file())
        self.add_file(FAILING_FILE_ID, "invalid-sample.jsonl", b'{"messages": [{"role": "robot", "content": "hi"}]}\n')

    # -- state, for tests and the shell --------------------------------------------------------------

    def add_file(self, file_id: str, filename: str, content: bytes) -> dict:
        record = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(self.clock()),
            "filename": filename,
            "purpose": "fine-tune",
            "status": "processed",
            "_content": content,
        }
        with self.lock:
            self.files[file_id] = record
        return record

    def withhold(self, file_id: str, purpose: str = "fine-tune") -> None:
        """Refuse to return this file's content, as OpenAI does for some purposes (and on some accounts)."""
        with self.lock:
            self.files[file_id]["purpose"] = purpose
            self.files[file_id]["_withheld"] = True

    def _file(self, file_id: str, *, content: bool) -> Answer:
        file = self.files.get(file_id)
        if content and file is not None and file.get("_withheld"):
            return _error(400, f"Not allowed to download files of purpose: {file['purpose']}")
        return super()._file(file_id, content=content)

    def _no_such_file(self, file_id: str) -> Answer:
        return _error(404, f"No such File object: {file_id}", param="id")

    def _public(self, job: dict) -> dict:
        return _strip(job)

    # -- HTTP ----------------------------------------------------------------------------------------

    def answer(self, request: Received) -> Answer:
        if not (request.headers.get("authorization", "").startswith("Bearer ") or request.headers.get("api-key")):
            return _error(401, "You didn't provide an API key.", code="invalid_api_key")
        path = _PREFIX.sub("", request.path, count=1)
        m = request.method
        key = request.headers.get("authorization", "").removeprefix("Bearer ") or request.headers.get("api-key")
        with self.lock:
            if path == "/files" and m == "POST":
                return self._upload(request)
            if path == "/chat/completions" and m == "POST":
                return self._chat(request.json())
            if (found := re.fullmatch(r"/files/([^/]+)(/content)?", path)) and m == "GET":
                return self._file(found[1], content=bool(found[2]))
            if path == "/fine_tuning/jobs" and m == "POST":
                return self._create(request.json(), key)
            if path == "/fine_tuning/jobs" and m == "GET":
                return self._list(request.query, key)
            if found := re.fullmatch(r"/fine_tuning/jobs/([^/]+)(?:/(cancel|pause|resume|events))?", path):
                job = self.jobs.get(found[1])
                if job is None or job.get("_account") not in (None, key):  # (another account's: not found)
                    return _error(404, f"Could not find fine-tune job: {found[1]}", param="fine_tune_id",
                                  code="fine_tune_not_found")
                self._advance(job)
                action = found[2]
                if action is None and m == "GET":
                    return json_answer(200, _strip(job))
                if action == "events" and m == "GET":
                    return self._events(job, request.query)
                if action in {"cancel", "pause", "resume"} and m == "POST":
                    return self._act(job, action)
        return _error(404, f"Invalid URL ({m} {request.path})")

    def _chat(self, body: dict) -> Answer:
        model = str(body.get("model"))
        if model in self.refuse_models:
            status, message = self.refuse_models[model]
            return _error(status, message, type_="server_error" if status >= 500 else "invalid_request_error")
        if self.chat_latency.get(model):
            self.lock.release()  # a slow model must not hold up the other, as at the real service
            try:
                time.sleep(self.chat_latency[model])
            finally:
                self.lock.acquire()
        return answer_chat(body, jobs=self.jobs.values(), files=self.files, name_field="fine_tuned_model",
                           succeeded="succeeded", base_models=MODELS)

    def _upload(self, request: Received) -> Answer:
        content_type = request.headers.get("content-type", "")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + request.body
        )
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
        purpose = fields.get("purpose", (None, b""))[1].decode()
        if "file" not in fields:
            return _error(400, "Missing required parameter: 'file'.", param="file")
        if purpose != "fine-tune":
            return _error(400, f"'{purpose}' is not one of the purposes this sandbox accepts: 'fine-tune'.",
                          param="purpose")
        filename, content = fields["file"]
        record = self.add_file(f"file-{secrets.token_hex(12)}", filename or "upload.jsonl", content)
        return json_answer(200, _strip(record))

    def _create(self, body: dict, key: str | None = None) -> Answer:
        if self.refuse_new_jobs is not None:
            status, message = self.refuse_new_jobs
            return _error(status, message, code="fine_tuning_unavailable")
        if "metadata" in body and not self.metadata_supported:
            return _error(400, "Unrecognized request argument supplied: metadata")
        model = body.get("model")
        file = self.files.get(body.get("training_file") or "")
        if model not in MODELS:
            return _error(400, f"Model {model} is not available for fine-tuning or does not exist.", param="model")
        if file is None:
            return _error(400, f"invalid training_file: {body.get('training_file')}", param="training_file")
        if body.get("validation_file") and body["validation_file"] not in self.files:
            return _error(400, f"invalid validation_file: {body['validation_file']}", param="validation_file")
        suffix_limit = 40 if self.azure else 64
        if body.get("suffix") and len(body["suffix"]) > suffix_limit:
            return _error(400, f"suffix must be at most {suffix_limit} characters", param="suffix")
        metadata = body.get("metadata") or {}
        if len(metadata) > 16 or any(len(k) > 64 or len(str(v)) > 512 for k, v in metadata.items()):
            return _error(400, "Invalid 'metadata': at most 16 keys of 64 characters, values of 512.",
                          param="metadata")
        job = self._new_job(body)
        if self.accounts:
            job["_account"] = key
        return json_answer(200, _strip(job))

    def _new_job(self, body: dict) -> dict:
        now = self.clock()
        self._order += 1
        method = body.get("method") or {"type": "supervised", "supervised": {"hyperparameters": {}}}
        hyper = (method.get(method.get("type", "supervised")) or {}).get("hyperparameters") or {}
        file = self.files.get(body.get("training_file") or "", {})
        job = {
            "id": f"ftjob-{secrets.token_hex(12)}",
            "object": "fine_tuning.job",
            "created_at": int(now),
            "error": None,
            "fine_tuned_model": None,
            "finished_at": None,
            "hyperparameters": {"batch_size": "auto", "learning_rate_multiplier": "auto",
                                "n_epochs": hyper.get("n_epochs", 3)},
            "model": body["model"],
            "organization_id": self.organization,
            "result_files": [],
            "seed": body.get("seed") if body.get("seed") is not None else secrets.randbelow(2**31),
            "status": "pending" if self.azure else "validating_files",
            "trained_tokens": None,
            "training_file": body.get("training_file"),
            "validation_file": body.get("validation_file"),
            "suffix": body.get("suffix"),
            "metadata": body.get("metadata"),
            "method": method,
            "estimated_finish": None,
            "integrations": [],
            "_order": self._order,
            "_stage_at": now,
            "_events": [],
            "_steps": 0,
            "_fails": b'"robot"' in file.get("_content", b"") or "fail" in file.get("filename", ""),
            "_lines": max(1, file.get("_content", b"").count(b"\n")),
        }
        self.jobs[job["id"]] = job
        self._event(job, f"Created fine-tuning job: {job['id']}")
        self._event(job, f"Validating training file: {job['training_file']}")
        return job

    def _event(self, job: dict, message: str, *, level: str = "info", type_: str = "message", data=None) -> None:
        job["_events"].append(
            {
                "id": f"ftevent-{secrets.token_hex(12)}",
                "object": "fine_tuning.job.event",
                "created_at": int(self.clock()),
                "level": level,
                "message": message,
                "type": type_,
                "data": data or {},
            }
        )

    def _advance(self, job: dict) -> None:
        """Move a paced job on by as many stages as its time allows."""
        if self.pace is None:
            return
        while True:
            elapsed = self.clock() - job["_stage_at"]
            status = job["status"]
            if status in {"validating_files", "pending", "created"} and elapsed >= self.pace:
                if job["_fails"]:
                    self._enter(job, "failed")
                else:
                    self._enter(job, "queued")
            elif status == "queued" and elapsed >= self.pace:
                self._enter(job, "running")
            elif status == "running":
                due = min(STEPS, int(elapsed / (TRAINING_PACES * self.pace) * STEPS))
                self._metrics(job, due)
                if elapsed < TRAINING_PACES * self.pace:
                    return
                self._enter(job, "succeeded")
            elif status == "pausing":
                self._enter(job, "paused")
            else:
                return

    def _metrics(self, job: dict, upto: int) -> None:
        while job["_steps"] < upto:
            job["_steps"] += 1
            step = job["_steps"]
            loss = round(2.2 * 0.78**step, 4)
            total = job.get("_total_steps", STEPS)
            self._event(job, f"Step {step}/{total}: training loss={loss}", type_="metrics",
                        data={"step": step, "train_loss": loss, "total_steps": total})

    _train = _metrics

    def _report(self, job: dict, step: int, train_loss: float | None, valid_loss: float | None) -> None:
        job["_steps"] = step
        data = {"step": step, "train_loss": train_loss, "total_steps": job.get("_total_steps", STEPS)}
        if valid_loss is not None:
            data["valid_loss"] = valid_loss
        self._event(job, f"Step {step}: training loss={train_loss}", type_="metrics", data=data)

    def _enter(self, job: dict, status: str, **fields) -> None:
        now = self.clock()
        job["status"] = status
        job["_stage_at"] = now
        job.update(fields)
        if status == "queued":
            self._event(job, "Files validated, moving job to queued state")
        elif status == "running":
            self._event(job, "Fine-tuning job started")
        elif status == "succeeded":
            self._metrics(job, STEPS)
            suffix = job.get("suffix") or ""
            job["fine_tuned_model"] = fields.get("fine_tuned_model") or (
                f"ft:{job['model']}:sandbox:{suffix}:{secrets.token_hex(4)}"
            )
            job["trained_tokens"] = fields.get("trained_tokens") or job["_lines"] * 120 * (
                job["hyperparameters"].get("n_epochs") or 3
            )
            job["finished_at"] = int(now)
            job["result_files"] = [f"file-{secrets.token_hex(12)}"]
            self._event(job, f"New fine-tuned model created: {job['fine_tuned_model']}")
            self._event(job, "The job has successfully completed")
        elif status == "failed":
            job["error"] = fields.get("error") or {
                "code": "invalid_training_file",
                "message": "The job failed due to an invalid training file. Invalid file format. Line 1, message 1:"
                " 'role' must be one of system, user, assistant or tool, got 'robot'.",
                "param": "training_file",
            }
            job["finished_at"] = int(now)
            self._event(job, job["error"]["message"], level="error")
        elif status == "cancelled":
            job["finished_at"] = int(now)
            self._event(job, "Fine-tuning job cancelled")
        elif status == "pausing":
            self._event(job, "Pausing fine-tuning job")
        elif status == "paused":
            self._event(job, "Fine-tuning job paused")
        if status in FINAL:
            self._send_webhook(job)

    def _act(self, job: dict, action: str) -> Answer:
        status = job["status"]
        if action == "cancel":
            if status in FINAL:
                return _error(400, f"Job {job['id']} has already finished ({status}) and cannot be cancelled.",
                              code="invalid_state")
            self._enter(job, "cancelled")
        else:
            needed, becomes = {"pause": ("running", "pausing"), "resume": ("paused", "running")}[action]
            if status != needed:
                return _error(400, f"Job {job['id']} is {status}; only a {needed} job can be {action}d.",
                              code="invalid_state")
            self._enter(job, becomes)
        return json_answer(200, _strip(job))

    def _list(self, query: dict[str, list[str]], key: str | None = None) -> Answer:
        limit = max(1, min(100, int(query.get("limit", ["20"])[0])))
        after = query.get("after", [None])[0]
        wanted = {k[len("metadata["):-1]: v[-1] for k, v in query.items() if k.startswith("metadata[")}
        jobs = sorted((j for j in self.jobs.values() if j.get("_account") in (None, key)), key=lambda j: -j["_order"])
        if wanted:
            jobs = [j for j in jobs if all((j.get("metadata") or {}).get(k) == v for k, v in wanted.items())]
        if after:
            ids = [j["id"] for j in jobs]
            jobs = jobs[ids.index(after) + 1:] if after in ids else []
        page = jobs[:limit]
        for job in page:
            self._advance(job)
        return json_answer(200, {"object": "list", "data": [_strip(j) for j in page],
                                 "has_more": len(jobs) > limit})

    def _events(self, job: dict, query: dict[str, list[str]]) -> Answer:
        limit = max(1, min(100, int(query.get("limit", ["20"])[0])))
        after = query.get("after", [None])[0]
        events = list(reversed(job["_events"]))
        if after:
            ids = [e["id"] for e in events]
            events = events[ids.index(after) + 1:] if after in ids else []
        return json_answer(200, {"object": "list", "data": events[:limit], "has_more": len(events) > limit})

    def _send_webhook(self, job: dict) -> None:
        if not (self.webhook_url and self.webhook_secret):
            return
        body = json.dumps({"id": f"evt_{secrets.token_hex(12)}", "object": "event", "created_at": int(self.clock()),
                           "type": f"fine_tuning.job.{job['status']}", "data": {"id": job["id"]}})
        headers = sign_webhook(body, self.webhook_secret)
        self.webhooks_sent.append({"job_id": job["id"], "headers": headers, "body": body})
        threading.Thread(target=_post, args=(self.webhook_url, body, headers), daemon=True).start()


def sign_webhook(body: str, secret: str, *, webhook_id: str | None = None, timestamp: int | None = None) -> dict:
    """Headers for `body` signed in the Standard Webhooks scheme that OpenAI uses."""
    webhook_id = webhook_id or f"wh_{secrets.token_hex(12)}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    key = base64.b64decode(secret[len("whsec_"):]) if secret.startswith("whsec_") else secret.encode()
    signature = base64.b64encode(hmac.new(key, f"{webhook_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest())
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{signature.decode()}",
        "content-type": "application/json",
    }


def _post(url: str, body: str, headers: dict) -> None:
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    try:
        urllib.request.urlopen(request, timeout=10).read()
    except OSError:
        pass  # a provider retries later; the bot's poller is the safety net


def _strip(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith("_")}
