"""The Slack stand-in's files: those people share with the app (`files.info` and the download, for the bot's token
only) and the app's own uploads (files.getUploadURLExternal, the bytes, files.completeUploadExternal). Mixed into
SlackStandIn (bot/sandbox/slack.py), whose `files`, `uploads`, `_pending_uploads`, `token`, `url` and `lock` it uses."""

from __future__ import annotations

import json
import re
import secrets
import time
from urllib.parse import quote

from bot.sandbox.http import Answer, Received

TEAM_ID = "T0SANDBOX"  # the stand-in's own workspace


def maybe_json(value):  # noqa: ANN001, ANN201 - a form field that may hold JSON
    """A Web API argument as sent: JSON text decoded (slack_sdk sends blocks, views and files so), else as it is."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class SlackFiles:
    def add_file(self, name: str, content: bytes, *, filetype: str = "jsonl", url: str | None = None,
                 team: str | None = None) -> str:
        """A file as if someone picked it in a modal's file input; returns its id. With `url`, files.info names that
        as its download address (as a hostile or broken answer might). With `team`, it was shared in that workspace
        only: another workspace's install neither finds nor downloads it."""
        file_id = f"F{secrets.token_hex(5).upper()}"
        with self.lock:
            self.files[file_id] = {"id": file_id, "name": name, "title": name, "size": len(content),
                                   "filetype": filetype, "mimetype": "application/octet-stream", "_content": content,
                                   "_url": url, "_team": team}
        return file_id

    def _readable(self, file: dict, token: str) -> bool:
        """Whether `token` may read `file`: the one bot token (any, for a stand-in given none), or a live install's
        of the file's workspace."""
        if self.token is None or token == self.token:
            return True
        owner = self.owner_of(token)
        return owner is not None and self._token_state(token) is None and file.get("_team") in (None, owner[0])


    # -- uploads by the app: files.getUploadURLExternal, the bytes, files.completeUploadExternal -------------

    def _files_getUploadURLExternal(self, params: dict) -> dict:
        if not params.get("filename") or not str(params.get("length") or "").isdigit():
            return {"ok": False, "error": "invalid_arguments"}
        file_id = f"F{secrets.token_hex(5).upper()}"
        self._pending_uploads[file_id] = {"id": file_id, "filename": params["filename"],
                                          "length": int(params["length"])}
        return {"ok": True, "upload_url": f"{self.url}/upload-ext/{file_id}", "file_id": file_id}

    def _files_completeUploadExternal(self, params: dict) -> dict:
        files = maybe_json(params.get("files")) or []
        done = []
        for entry in files:
            pending = self._pending_uploads.pop(entry.get("id"), None)
            if pending is None or "_content" not in pending:
                return {"ok": False, "error": "file_not_found"}
            if len(pending["_content"]) != pending["length"]:
                return {"ok": False, "error": "file_upload_size_mismatch"}
            record = {**pending, "title": entry.get("title"), "channel": params.get("channel_id"),
                      "thread_ts": params.get("thread_ts"), "initial_comment": params.get("initial_comment"),
                      "at": time.time(), "by": self.owner_of(params.get("_token") or "")}
            with self.lock:
                self.uploads.append(record)
            self._notify("upload", record)
            done.append({"id": pending["id"], "title": entry.get("title"), "name": pending["filename"]})
        return {"ok": True, "files": done}

    # -- files people share ----------------------------------------------------------------------------------------

    def _files_info(self, params: dict) -> dict:
        file = self.files.get(str(params.get("file") or ""))
        token = params.get("_token") or ""
        with self.lock:
            self.file_reads.append({"kind": "info", "file": params.get("file"), "by": self.owner_of(token)})
        if file is None or not self._readable(file, token):
            return {"ok": False, "error": "file_not_found"}
        shown = {k: v for k, v in file.items() if not k.startswith("_")}
        url = file.get("_url") or f"{self.url}/files-pri/{TEAM_ID}-{file['id']}/download/{quote(file['name'])}"
        return {"ok": True, "file": {**shown, "url_private_download": url}}

    def _download(self, request: Received) -> Answer:
        """A file's bytes for the bot token only; anyone else gets Slack's sign-in page, with a 200, as Slack does."""
        found = re.fullmatch(rf"/files-pri/{TEAM_ID}-([A-Z0-9]+)/download/.*", request.path)
        file = self.files.get(found[1]) if found else None
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        with self.lock:
            self.file_reads.append({"kind": "download", "file": found[1] if found else None,
                                    "by": self.owner_of(token)})
        if not (token == self.token or file is not None and self._readable(file, token)):
            return 200, {"content-type": "text/html; charset=utf-8"}, b"<!DOCTYPE html><html>Sign in to Slack</html>"
        if file is None:
            return 404, {"content-type": "text/plain"}, b"Not Found"
        return 200, {"content-type": "application/octet-stream"}, file["_content"]
