"""A Together-AI-shaped fine-tuning service on loopback: the sandbox's second provider and the tests' stand-in.

The real `together` client talks to it through `base_url` (the host root; the SDK's paths start with /v1). It keeps
files and jobs in memory and answers as Together's API does: `ft-<uuid>` ids, ISO timestamps, the model limits and
price estimate the SDK asks for before it creates a job, one unpaged list of every job in no particular order, a
failure's reason only in a `job_error` event, and jobs that move `pending -> queued -> running -> compressing ->
uploading -> completed` (each stage lasting `pace` seconds, training three, or only when a test says).
"""

from __future__ import annotations

import email.parser
import email.policy
import re
import secrets
import uuid
from datetime import datetime, timezone

from bot.sandbox.chat import answer_chat
from bot.sandbox.http import Answer, PacedStandIn, Received, json_answer
from bot.sandbox.openai import FAILING_FILE_ID, SAMPLE_FILE_ID, sample_training_file

MODELS = {
    "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference",
    "meta-llama/Meta-Llama-3.1-70B-Instruct-Reference",
    "meta-llama/Llama-3.2-3B-Instruct",
    "Qwen/Qwen2.5-7B-Instruct",
    "mistralai/Mistral-7B-Instruct-v0.2",
}
FINAL = {"completed", "error", "cancelled"}
STEPS = 10
# Training lasts this many paces: long enough for a progress reply to reach the job's thread before it ends.
TRAINING_PACES = 3
PRICE_PER_MILLION_TOKENS = 0.48  # the sandbox's own figure, for its estimates


def _error(status: int, message: str, *, type_: str = "invalid_request_error", code=None, param=None) -> Answer:
    return json_answer(status, {"error": {"message": message, "type": type_, "param": param, "code": code}})


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


class TogetherSandbox(PacedStandIn):
    """Files and fine-tuning jobs, Together AI's wire format, on 127.0.0.1."""

    serves = "together"  # the provider this stands in for (the name the bot gives its jobs)

    default_model = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
    sample_file = SAMPLE_FILE_ID

    def __init__(self, *, pace: float | None = None, clock=None, user: str = "sandbox-user") -> None:
        super().__init__(pace=pace, **({"clock": clock} if clock else {}))
        self.user = user
        self.refuse_new_jobs: tuple[int, str] | None = None
        self.lora_only: set[str] = set()  # models whose limits say full fine-tuning is not offered
        self._uploads: dict[str, dict] = {}
        self.add_file(SAMPLE_FILE_ID, "sample.jsonl", sample_training_file())
        self.add_file(FAILING_FILE_ID, "invalid-sample.jsonl", b'{"messages": [{"role": "robot", "content": "hi"}]}\n')

    # -- state, for tests and the shell --------------------------------------------------------------

    def add_file(self, file_id: str, filename: str, content: bytes) -> dict:
        record = {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(self.clock()),
                  "filename": filename, "purpose": "fine-tune", "FileType": "jsonl", "Processed": True,
                  "LineCount": content.count(b"\n"), "_content": content}
        with self.lock:
            self.files[file_id] = record
        return record

    # -- HTTP ----------------------------------------------------------------------------------------

    def answer(self, request: Received) -> Answer:
        path, m = request.path.rstrip("/"), request.method
        if (found := re.fullmatch(r"/upload/([^/]+)", path)) and m == "PUT":
            # A presigned address, as object storage gives: its signature, not an API key, lets the bytes in.
            with self.lock:
                upload = self._uploads.get(found[1])
                if upload is None or request.query.get("signature") != [upload["signature"]]:
                    return _error(403, "The upload address is not valid.")
                upload["_content"] = request.body
            return json_answer(200, {})
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return _error(401, "Invalid API key provided.", type_="authentication_error", code="invalid_api_key")
        with self.lock:
            if path == "/v1/fine-tunes/models/limits" and m == "GET":
                return self._limits(request.query.get("model_name", [""])[0])
            if path == "/v1/fine-tunes/estimate-price" and m == "POST":
                return self._estimate(request.json())
            if path == "/v1/fine-tunes" and m == "POST":
                return self._create(request.json())
            if path == "/v1/fine-tunes" and m == "GET":
                for job in self.jobs.values():
                    self._advance(job)
                # Every job, in no order the client may rely on (here: by id).
                return json_answer(200, {"data": [_public_listed(j) for j in
                                                  sorted(self.jobs.values(), key=lambda j: j["id"])]})
            if path == "/v1/files" and m == "POST":
                return self._upload_url(request)
            if (found := re.fullmatch(r"/v1/files/([^/]+)/preprocess", path)) and m == "POST":
                upload = self._uploads.pop(found[1], None)
                if upload is None or "_content" not in upload:
                    return _error(400, f"File {found[1]} has not been uploaded.")
                record = self.add_file(found[1], upload["filename"], upload["_content"])
                return json_answer(200, {k: v for k, v in record.items() if not k.startswith("_")})
            if path == "/v1/chat/completions" and m == "POST":
                return self._chat(request.json())
            if (found := re.fullmatch(r"/v1/files/([^/]+)(/content)?", path)) and m == "GET":
                return self._file(found[1], content=bool(found[2]))
            if found := re.fullmatch(r"/v1/fine-tunes/([^/]+)(?:/(cancel|events|metrics))?", path):
                job = self.jobs.get(found[1])
                if job is None:
                    return _error(404, f"Fine-tune job {found[1]} not found", code="not_found")
                self._advance(job)
                action = found[2]
                if action is None and m == "GET":
                    return json_answer(200, self._public(job))
                if action == "events" and m == "GET":
                    return json_answer(200, {"data": list(job["_events"])})
                if action == "metrics" and m == "GET":
                    since = (request.query.get("global_step_from") or [None])[0]
                    rows = [row for row in job["_metrics"] if since is None or not isinstance(
                        row.get("train/global_step"), (int, float)) or row["train/global_step"] >= int(since)]
                    return json_answer(200, {"metrics": rows})
                if action == "cancel" and m == "POST":
                    return self._cancel(job)
        return _error(404, f"Not found: {m} {request.path}")

    def _chat(self, body: dict) -> Answer:
        return answer_chat(body, jobs=self.jobs.values(), files=self.files, name_field="model_output_name",
                           succeeded="completed", base_models=MODELS)

    def _public(self, job: dict) -> dict:
        """A job as retrieve shows it: with its events."""
        return {**_public_listed(job), "events": list(job["_events"])}

    def _upload_url(self, request: Received) -> Answer:
        """Together's upload begins with a form; the answer is a redirect to where the bytes go, and the file id."""
        form = _form_fields(request)
        if form.get("purpose") != "fine-tune":
            return _error(400, f"Invalid purpose {form.get('purpose')!r}.", param="purpose")
        file_id = f"file-{uuid.uuid4()}"
        signature = secrets.token_hex(16)
        self._uploads[file_id] = {"filename": form.get("file_name") or "upload.jsonl", "signature": signature}
        return 302, {"location": f"{self.url}/upload/{file_id}?signature={signature}", "x-together-file-id": file_id,
                     "content-type": "application/json"}, b"{}"

    def _limits(self, model: str) -> Answer:
        if model not in MODELS:
            return _error(404, f"Model {model} is not available for fine-tuning.", code="model_not_found",
                          param="model")
        full = model not in self.lora_only
        return json_answer(200, {
            "model_name": model, "default_gradient_accumulation_steps": 1, "max_learning_rate": 1.0,
            "min_learning_rate": 1e-8, "max_num_checkpoints": 10, "max_num_epochs": 20, "max_num_evals": 100,
            "max_seq_length_sft": 8192, "max_seq_length_dpo": 8192, "min_max_seq_length": 512,
            "merge_output_lora": True, "supports_full_training": full, "supports_reasoning": False,
            "supports_tools": True, "supports_vision": False,
            "lora_training": {"default_rank": 16, "max_batch_size": 32, "max_batch_size_dpo": 16, "max_rank": 64,
                              "min_batch_size": 8, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
            "full_training": {"max_batch_size": 32, "max_batch_size_dpo": 16, "min_batch_size": 8} if full else None,
        })

    def _estimate(self, body: dict) -> Answer:
        file = self.files.get(body.get("training_file") or "")
        if file is None:
            return json_answer(200, {"estimation_available": False, "unavailable_reason": "train_file_invalid"})
        tokens = _tokens(file) * int(body.get("n_epochs") or 1)
        return json_answer(200, {"estimation_available": True, "allowed_to_proceed": True, "user_limit": 100.0,
                                 "estimated_train_token_count": tokens, "estimated_eval_token_count": 0,
                                 "estimated_total_price": round(tokens / 1e6 * PRICE_PER_MILLION_TOKENS, 4)})

    def _create(self, body: dict) -> Answer:
        if self.refuse_new_jobs is not None:
            status, message = self.refuse_new_jobs
            return _error(status, message, code="fine_tuning_unavailable")
        if body.get("model") not in MODELS:
            return _error(400, f"Model {body.get('model')} is not available for fine-tuning.", param="model")
        if body.get("training_file") not in self.files:
            return _error(400, f"Training file {body.get('training_file')} not found.", param="training_file")
        if body.get("validation_file") and body["validation_file"] not in self.files:
            return _error(400, f"Validation file {body['validation_file']} not found.", param="validation_file")
        if body.get("suffix") and len(body["suffix"]) > 40:
            return _error(400, "Suffix must be at most 40 characters.", param="suffix")
        job = self._new_job(body)
        return json_answer(200, _public_listed(job))

    def _new_job(self, body: dict) -> dict:
        now = self.clock()
        file = self.files.get(body.get("training_file") or "", {})
        model = body["model"]
        suffix = body.get("suffix") or ""
        name = model.split("/")[-1] + (f"-{suffix}" if suffix else "") + f"-{secrets.token_hex(3)}"
        training_type = body.get("training_type") or {"type": "Lora", "lora_r": 16, "lora_alpha": 32}
        job = {
            "id": f"ft-{uuid.uuid4()}",
            "object": "finetune",
            "status": "pending",
            "user_id": self.user,
            "owner_address": self.user,
            "model": model,
            "model_output_name": f"{self.user}/{name}",
            "training_file": body.get("training_file"),
            "validation_file": body.get("validation_file") or "",
            "suffix": suffix,  # a string, as the spec has it ('' when none was given)
            "n_epochs": int(body.get("n_epochs") or 1),
            "learning_rate": body.get("learning_rate", 0.00001),
            # Together picks a seed when none is given, and says which.
            "random_seed": body.get("random_seed") if body.get("random_seed") is not None else secrets.randbelow(2**31),
            "training_type": training_type,
            "training_method": body.get("training_method") or {"method": "sft", "train_on_inputs": "auto"},
            "batch_size": 8,
            "n_checkpoints": 1,
            "n_evals": 0,
            "token_count": 0,
            "total_price": 0,
            "epochs_completed": 0,
            "created_at": _iso(now),
            "updated_at": _iso(now),
            "started_at": _iso(now),  # a string in the spec: the request's time until training starts
            "_stage_at": now,
            "_events": [],
            "_metrics": [],
            "_steps": 0,
            "_fails": b'"robot"' in file.get("_content", b"") or "fail" in file.get("filename", ""),
            "_tokens": _tokens(file) if file else 0,
        }
        self.jobs[job["id"]] = job
        self._event(job, "job_pending", "Fine tune request created")
        return job

    def _event(self, job: dict, type_: str, message: str, *, level: str = "info", **extra) -> None:
        # Every field the spec requires of an event, with the values a job at this stage has.
        required = {"param_count": 8_030_261_248, "token_count": job.get("token_count") or 0, "total_steps": STEPS,
                    "wandb_url": "", "step": job.get("_steps", 0), "checkpoint_path": "", "model_path": "",
                    "training_offset": 0, "hash": ""}
        job["_events"].append({"object": "fine-tune-event", "created_at": _iso(self.clock()), "type": type_,
                               "message": message, "level": level, **required, **extra})

    def _advance(self, job: dict) -> None:
        if self.pace is None:
            return
        while True:
            elapsed = self.clock() - job["_stage_at"]
            status = job["status"]
            nxt = {"pending": "queued", "queued": "running", "compressing": "uploading", "uploading": "completed",
                   "cancel_requested": "cancelled"}.get(status)
            if status == "running":
                self._steps(job, min(STEPS, int(elapsed / (TRAINING_PACES * self.pace) * STEPS)))
                if elapsed < TRAINING_PACES * self.pace:
                    return
                self._enter(job, "compressing")
            elif status == "queued" and job["_fails"] and elapsed >= self.pace:
                self._enter(job, "error")
            elif nxt and elapsed >= (0 if status == "cancel_requested" else self.pace) / (
                    3 if status in {"compressing", "uploading"} else 1):
                self._enter(job, nxt)
            else:
                return

    def _steps(self, job: dict, upto: int) -> None:
        while job["_steps"] < upto:
            job["_steps"] += 1
            step = job["_steps"]
            loss = round(2.1 * 0.8**step, 4)
            job["_metrics"].append({"train/global_step": step, "train/loss": loss,
                                    "train/epoch": step / STEPS * job["n_epochs"],
                                    "train/learning_rate": job["learning_rate"] or 0.00001})
            if step % (STEPS // max(1, min(job["n_epochs"], STEPS))) == 0:
                job["epochs_completed"] = min(job["n_epochs"], job["epochs_completed"] + 1)
                self._event(job, "epoch_complete", f"Epoch completed, at step {step}", step=step, total_steps=STEPS)

    def _report(self, job: dict, step: int, train_loss: float | None, valid_loss: float | None) -> None:
        job["_steps"] = step
        row = {"train/global_step": step, "train/loss": train_loss, "train/epoch": 1}
        if valid_loss is not None:
            row["eval/loss"] = valid_loss
        job["_metrics"].append(row)

    def _no_such_file(self, file_id: str) -> Answer:
        return _error(404, f"File {file_id} not found", code="file_not_found")

    def _train(self, job: dict, upto: int) -> None:
        self._steps(job, upto)

    def _enter(self, job: dict, status: str, **fields) -> None:
        now = self.clock()
        job["status"] = status
        job["_stage_at"] = now
        job["updated_at"] = _iso(now)
        reason = fields.pop("error", None)
        job.update(fields)
        if status == "queued":
            self._event(job, "job_start", "Job started")
        elif status == "running":
            job["started_at"] = _iso(now)
            self._event(job, "training_start", "Training started for model " + job["model"])
        elif status == "compressing":
            self._finish_training(job)
            self._event(job, "model_compressing", "Compressing output model")
        elif status == "uploading":
            self._event(job, "model_uploading", "Uploading output model")
        elif status == "completed":
            self._finish_training(job)
            self._event(job, "job_complete", f"Job finished; the model is {job['model_output_name']}")
        elif status == "error":
            self._event(job, "job_error", reason or (
                "Error: the training file is not valid: line 1: 'role' must be one of system, user, assistant or "
                "tool, got 'robot'."), level="error")
        elif status == "cancel_requested":
            self._event(job, "cancel_requested", "Cancel requested")
        elif status == "cancelled":
            self._event(job, "job_stopped", "Job cancelled")

    def _finish_training(self, job: dict) -> None:
        if job["token_count"]:
            return
        self._steps(job, STEPS)
        job["token_count"] = job["_tokens"] * job["n_epochs"]
        job["total_price"] = int(job["token_count"] / 1e6 * PRICE_PER_MILLION_TOKENS * 1e9)
        self._event(job, "training_complete", "Training completed")

    def _cancel(self, job: dict) -> Answer:
        if job["status"] in FINAL:
            return _error(400, f"Fine-tune job {job['id']} has already finished ({job['status']}); it cannot be "
                          "cancelled.", code="invalid_state")
        self._enter(job, "cancel_requested")
        return json_answer(200, _public_listed(job))


def _form_fields(request: Received) -> dict[str, str]:
    """The fields of a multipart form (the SDK sends its upload request as one)."""
    content_type = request.headers.get("content-type", "")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + request.body)
    if not message.is_multipart():
        return request.form() if request.body else {}
    return {part.get_param("name", header="content-disposition"): (part.get_payload(decode=True) or b"").decode()
            for part in message.iter_parts()}


def _tokens(file: dict) -> int:
    return max(1, len(file.get("_content", b"")) // 4)


def _public_listed(job: dict) -> dict:
    """A job as listings, creates and cancels show it: without its events."""
    return {k: v for k, v in job.items() if not k.startswith("_")}
