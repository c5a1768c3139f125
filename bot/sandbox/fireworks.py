"""A Fireworks-AI-shaped fine-tuning service on loopback: the sandbox's third provider and the tests' stand-in.

The real `fireworks-ai` client talks to it through `base_url` (the SDK's paths start with /v1; with an overridden base
URL, chat completions come to /v1/chat/completions). It answers as Fireworks' API does: resources named
`accounts/{account}/…`, camelCase JSON, datasets that are created, uploaded to (multipart) and then READY,
supervised fine-tuning jobs in `JOB_STATE_*` states with `status {code, message}`, `jobProgress` and
`estimatedCost`, cursor pages (`pageSize` up to 200, `pageToken`, ordered by name unless `orderBy` says
`createTime desc`), and Google-style errors `{"error": {"code", "message", "status"}}`. Jobs move
`CREATING -> VALIDATING -> PENDING -> RUNNING -> WRITING_RESULTS -> COMPLETED`, a stage a `pace` (training three).
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import re
import secrets
from datetime import datetime, timezone

from bot.sandbox.chat import answer_chat
from bot.sandbox.http import Answer, PacedStandIn, Received, json_answer
from bot.sandbox.openai import FAILING_FILE_ID, SAMPLE_FILE_ID, sample_training_file

ACCOUNT = "sandbox"
BASE = "accounts/fireworks/models/"
MODELS = {BASE + name for name in ("llama-v3p1-8b-instruct", "llama-v3p1-70b-instruct", "llama-v3p2-3b-instruct",
                                   "qwen2p5-7b-instruct", "qwen2p5-72b-instruct")}
FINAL = {"JOB_STATE_COMPLETED", "JOB_STATE_EARLY_STOPPED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED",
         "JOB_STATE_EXPIRED"}
NEXT = {"JOB_STATE_CREATING": "JOB_STATE_VALIDATING", "JOB_STATE_VALIDATING": "JOB_STATE_PENDING",
        "JOB_STATE_PENDING": "JOB_STATE_RUNNING", "JOB_STATE_RUNNING": "JOB_STATE_WRITING_RESULTS",
        "JOB_STATE_WRITING_RESULTS": "JOB_STATE_COMPLETED", "JOB_STATE_CANCELLING": "JOB_STATE_CANCELLED"}
# The bot's outcome words, which tests and the shell use to move a job, as Fireworks' states.
WORDS = {"succeeded": "JOB_STATE_COMPLETED", "failed": "JOB_STATE_FAILED", "cancelled": "JOB_STATE_CANCELLED",
         "running": "JOB_STATE_RUNNING", "queued": "JOB_STATE_PENDING", "pending": "JOB_STATE_PENDING"}
TRAINING_PACES = 3
MAX_PAGE = 200
PRICE_PER_MILLION_TOKENS = 0.50  # the sandbox's own figure, for its estimatedCost
STATUS_WORDS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
ID = r"[a-z0-9][a-z0-9-]{0,62}"


def _error(status: int, message: str) -> Answer:
    return json_answer(status, {"error": {"code": status, "message": message,
                                          "status": STATUS_WORDS.get(status, "UNKNOWN")}})


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


class FireworksSandbox(PacedStandIn):
    """Datasets and supervised fine-tuning jobs, Fireworks AI's wire format, on 127.0.0.1."""

    serves = "fireworks"  # the provider this stands in for (the name the bot gives its jobs)

    default_model = BASE + "llama-v3p1-8b-instruct"
    sample_file = SAMPLE_FILE_ID

    def __init__(self, *, pace: float | None = None, clock=None, account: str = ACCOUNT) -> None:
        super().__init__(pace=pace, **({"clock": clock} if clock else {}))
        self.account = account
        self._downloads: dict[str, str] = {}  # signature -> dataset id
        self.add_file(SAMPLE_FILE_ID, "sample.jsonl", sample_training_file())
        self.add_file(FAILING_FILE_ID, "invalid-sample.jsonl", b'{"messages": [{"role": "robot", "content": "hi"}]}\n')

    # -- state, for tests and the shell --------------------------------------------------------------

    def add_file(self, dataset_id: str, filename: str, content: bytes) -> dict:
        """A dataset, uploaded and READY (the stand-in's files are its datasets)."""
        now = self.clock()
        record = {"name": f"accounts/{self.account}/datasets/{dataset_id}", "displayName": filename,
                  "format": "CHAT", "state": "READY", "createTime": _iso(now), "updateTime": _iso(now),
                  "exampleCount": str(content.count(b"\n")), "userUploaded": {}, "_content": content,
                  "_filename": filename}
        with self.lock:
            self.files[dataset_id] = record
        return record

    # -- HTTP ----------------------------------------------------------------------------------------

    def answer(self, request: Received) -> Answer:
        path, m = request.path.rstrip("/"), request.method
        if (found := re.fullmatch(r"/download/([a-f0-9]+)", path)) and m == "GET":
            # A signed address, as object storage gives: its signature, not an API key, lets the bytes out.
            with self.lock:
                dataset = self.files.get(self._downloads.get(found[1], ""))
            if dataset is None:
                return _error(403, "The download address is not valid.")
            return 200, {"content-type": "application/jsonl"}, dataset["_content"]
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return _error(401, "Invalid API key.")
        with self.lock:
            if path == "/v1/chat/completions" and m == "POST":
                return self._chat(request.json())
            found = re.fullmatch(r"/v1/accounts/([^/]+)/(datasets|supervisedFineTuningJobs)(?:/([^/:]+))?(?::(\w+))?",
                                 path)
            if found is None:
                return _error(404, f"Not found: {m} {request.path}")
            if found[1] != self.account:
                return _error(403, f"The API key has no access to account {found[1]}.")
            kind, resource, verb = found[2], found[3], found[4]
            if kind == "datasets":
                return self._datasets(request, m, resource, verb)
            return self._jobs(request, m, resource, verb)

    def _datasets(self, request: Received, m: str, dataset_id: str | None, verb: str | None) -> Answer:
        if dataset_id is None and m == "POST":
            body = request.json()
            new_id = str(body.get("datasetId") or "")
            if not re.fullmatch(ID, new_id):
                return _error(400, f"Invalid dataset id {new_id!r}.")
            if new_id in self.files:
                return _error(409, f"Dataset accounts/{self.account}/datasets/{new_id} already exists.")
            dataset = body.get("dataset") or {}
            now = self.clock()
            self.files[new_id] = {"name": f"accounts/{self.account}/datasets/{new_id}",
                                  "displayName": dataset.get("displayName") or new_id,
                                  "format": dataset.get("format") or "CHAT", "state": "UPLOADING",
                                  "createTime": _iso(now), "updateTime": _iso(now), "exampleCount": "0",
                                  "_content": b"", "_filename": dataset.get("displayName") or new_id}
            return json_answer(200, _public(self.files[new_id]))
        dataset = self.files.get(dataset_id or "")
        if dataset is None:
            return _error(404, f"Dataset accounts/{self.account}/datasets/{dataset_id} not found.")
        if verb is None and m == "GET":
            return json_answer(200, _public(dataset))
        if verb == "upload" and m == "POST":
            content, filename = _multipart_file(request)
            if content is None:
                return _error(400, "The upload has no file.")
            dataset.update(_content=content, _filename=filename or dataset["_filename"], state="READY",
                           exampleCount=str(content.count(b"\n")), updateTime=_iso(self.clock()))
            return json_answer(200, {"filenameToSignedUrls": {}})
        if verb == "getDownloadEndpoint" and m == "GET":
            signature = secrets.token_hex(16)
            self._downloads[signature] = dataset["name"].rsplit("/", 1)[-1]
            signed = {dataset["_filename"]: f"{self.url}/download/{signature}"}
            return json_answer(200, {"filenameToSignedUrls": signed})
        return _error(404, f"Not found: {m} {request.path}")

    def _jobs(self, request: Received, m: str, job_id: str | None, verb: str | None) -> Answer:
        if job_id is None and m == "POST":
            return self._create(request.json(), (request.query.get("supervisedFineTuningJobId") or [""])[0])
        if job_id is None and m == "GET":
            return self._list(request.query)
        job = self.jobs.get(job_id or "")
        if job is None:
            return _error(404, f"Job accounts/{self.account}/supervisedFineTuningJobs/{job_id} not found.")
        self._advance(job)
        if verb is None and m == "GET":
            return json_answer(200, self._public(job))
        if verb == "cancel" and m == "POST":
            if job["state"] in FINAL:
                return _error(400, f"Job {job_id} has already ended ({job['state']}); it cannot be cancelled.")
            self._enter(job, "JOB_STATE_CANCELLING")
            return json_answer(200, {})
        return _error(404, f"Not found: {m} {request.path}")

    def _list(self, query: dict) -> Answer:
        for job in self.jobs.values():
            self._advance(job)
        size = (query.get("pageSize") or ["50"])[0]
        if not size.isdigit():
            return _error(400, f"Invalid pageSize {size!r}.")
        size = min(MAX_PAGE, int(size) or 50)
        order = (query.get("orderBy") or [""])[0]
        if order == "createTime desc":
            ordered = sorted(self.jobs.values(), key=lambda j: (j["_created"], j["_seq"]), reverse=True)
        elif order in {"", "name"}:
            ordered = sorted(self.jobs.values(), key=lambda j: j["name"])
        else:
            return _error(400, f"Unsupported orderBy {order!r}.")
        token = (query.get("pageToken") or [""])[0]
        start = 0
        if token:
            try:
                start = int(base64.urlsafe_b64decode(token.encode()).decode())
            except ValueError:
                return _error(400, "Invalid pageToken.")
        page = ordered[start:start + size]
        following = start + size < len(ordered)
        body = {"supervisedFineTuningJobs": [self._public(j) for j in page], "totalSize": len(ordered)}
        if following:
            body["nextPageToken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        return json_answer(200, body)

    def _create(self, body: dict, job_id: str) -> Answer:
        if job_id and not re.fullmatch(ID, job_id):
            return _error(400, f"Invalid job id {job_id!r}.")
        if job_id in self.jobs:
            return _error(409, f"Job accounts/{self.account}/supervisedFineTuningJobs/{job_id} already exists.")
        if body.get("baseModel") not in MODELS:
            return _error(400, f"Model {body.get('baseModel')} is not available for fine-tuning.")
        dataset = str(body.get("dataset") or "").rsplit("/", 1)[-1]
        if dataset not in self.files:
            return _error(400, f"Dataset {body.get('dataset')} not found.")
        if self.files[dataset]["state"] != "READY":
            return _error(400, f"Dataset {body.get('dataset')} is not ready (state {self.files[dataset]['state']}).")
        evaluation = str(body.get("evaluationDataset") or "").rsplit("/", 1)[-1]
        if evaluation and evaluation not in self.files:
            return _error(400, f"Dataset {body.get('evaluationDataset')} not found.")
        epochs = body.get("epochs")
        if epochs is not None and not (isinstance(epochs, int) and 1 <= epochs <= 20):
            return _error(400, "epochs must be from 1 to 20.")
        job = self._new_job({**body, "_id": job_id})
        return json_answer(200, self._public(job))

    def _chat(self, body: dict) -> Answer:
        tuned = [{"outputModel": j["outputModel"], "status": j["state"], "training_file": j["_dataset"]}
                 for j in self.jobs.values()]
        return answer_chat(body, jobs=tuned, files=self.files, name_field="outputModel",
                           succeeded="JOB_STATE_COMPLETED", base_models=MODELS)

    # -- jobs ------------------------------------------------------------------------------------------

    def _new_job(self, body: dict) -> dict:
        now = self.clock()
        job_id = body.get("_id") or secrets.token_hex(8)
        dataset = str(body.get("dataset") or self.sample_file).rsplit("/", 1)[-1]
        model = body.get("baseModel") or body.get("model") or self.default_model
        file = self.files.get(dataset, {})
        job = {
            "name": f"accounts/{self.account}/supervisedFineTuningJobs/{job_id}",
            "displayName": body.get("displayName") or "",
            "dataset": f"accounts/{self.account}/datasets/{dataset}",
            "baseModel": model,
            "outputModel": body.get("outputModel") or f"accounts/{self.account}/models/{job_id}",
            "epochs": body.get("epochs") or 1,
            "learningRate": body.get("learningRate") or 0.0001,
            "loraRank": body.get("loraRank") or 8,
            "state": "JOB_STATE_CREATING",
            "createTime": _iso(now),
            "updateTime": _iso(now),
            "createdBy": "sandbox@example.com",
            "jobProgress": {"percent": 0, "epoch": 0},
            "_created": now,
            "_seq": len(self.jobs),
            "_stage_at": now,
            "_dataset": dataset,
            "_fails": b'"robot"' in file.get("_content", b""),
            "_tokens": max(1, len(file.get("_content", b"")) // 4),
        }
        if body.get("evaluationDataset"):
            job["evaluationDataset"] = body["evaluationDataset"]
        # Fireworks estimates a job's cost as it is made (a google.type.Money: whole units as a string, and nanos).
        cost = job["_tokens"] * job["epochs"] / 1e6 * PRICE_PER_MILLION_TOKENS
        job["estimatedCost"] = {"currencyCode": "USD", "units": str(int(cost)), "nanos": int(cost % 1 * 1e9)}
        self.jobs[job_id] = job
        return job

    def _public(self, job: dict) -> dict:
        return _public(job)

    def _enter(self, job: dict, status: str, **fields) -> None:
        state = WORDS.get(status, status if status.startswith("JOB_STATE_") else "JOB_STATE_" + status.upper())
        now = self.clock()
        job.update(state=state, _stage_at=now, updateTime=_iso(now))
        reason = fields.pop("error", None)
        job.update({k: v for k, v in fields.items() if not k.startswith("_")})
        if state in {"JOB_STATE_WRITING_RESULTS", "JOB_STATE_COMPLETED", "JOB_STATE_EARLY_STOPPED"}:
            job["jobProgress"] = {"percent": 100, "epoch": job["epochs"]}
        if state in FINAL:
            job["completedTime"] = _iso(now)
        if state == "JOB_STATE_FAILED":
            message = reason.get("message") if isinstance(reason, dict) else reason
            job["status"] = {"code": "INVALID_ARGUMENT", "message": message or (
                "Dataset validation failed: line 1: 'role' must be one of system, user, assistant or tool, got "
                "'robot'.")}
        elif state == "JOB_STATE_CANCELLED":
            job["status"] = {"code": "CANCELLED", "message": "Cancelled by the user."}

    def _train(self, job: dict, upto: int) -> None:
        total = job.get("_total_steps") or 10
        job["jobProgress"] = {"percent": min(100, int(upto * 100 / total)),
                              "epoch": min(job["epochs"], upto * job["epochs"] // total)}

    def _no_such_file(self, file_id: str) -> Answer:
        return _error(404, f"Dataset accounts/{self.account}/datasets/{file_id} not found.")

    def _advance(self, job: dict) -> None:
        """Move on by as many stages as the time since the last one allows (each stage starting when the one before
        it ended, not when someone asked)."""
        if self.pace is None:
            return
        while job["state"] not in FINAL:
            state, began = job["state"], job["_stage_at"]
            elapsed = self.clock() - began
            if state == "JOB_STATE_RUNNING":
                self._train(job, min(10, int(elapsed / (TRAINING_PACES * self.pace) * 10)))
            lasts = {"JOB_STATE_RUNNING": TRAINING_PACES * self.pace, "JOB_STATE_CANCELLING": 0.0,
                     "JOB_STATE_CREATING": self.pace / 3,
                     "JOB_STATE_WRITING_RESULTS": self.pace / 3}.get(state, self.pace)
            nxt = "JOB_STATE_FAILED" if state == "JOB_STATE_VALIDATING" and job["_fails"] else NEXT.get(state)
            if nxt is None or elapsed < lasts:
                return
            self._enter(job, nxt)
            job["_stage_at"] = began + lasts


def _public(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _multipart_file(request: Received) -> tuple[bytes | None, str | None]:
    """The `file` part of a multipart upload: its bytes and file name."""
    content_type = request.headers.get("content-type", "")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + request.body)
    if not message.is_multipart():
        return None, None
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            return part.get_payload(decode=True) or b"", part.get_filename()
    return None, None
