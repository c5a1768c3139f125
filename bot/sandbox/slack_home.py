"""The Slack stand-in's App Home: `views.publish`, held to Slack's limit of 100 blocks a Home. Mixed into
SlackStandIn (bot/sandbox/slack.py)."""

from __future__ import annotations

import json
import time


class SlackHome:
    def _init_home(self) -> None:
        self.homes: dict[str, dict] = {}  # user id -> the Home as last published
        self.home_log: list[dict] = []  # every views.publish, in order

    def _views_publish(self, params: dict) -> dict:
        user_id = str(params.get("user_id") or "")
        view = params.get("view")
        if isinstance(view, str):
            try:
                view = json.loads(view)
            except ValueError:
                return {"ok": False, "error": "invalid_arguments"}
        if not user_id or not isinstance(view, dict) or view.get("type") != "home":
            return {"ok": False, "error": "invalid_arguments"}
        if len(view.get("blocks") or []) > 100:
            return {"ok": False, "error": "invalid_arguments"}
        with self.lock:
            self.homes[user_id] = view
            self.home_log.append({"user_id": user_id, "view": view, "at": time.time(),
                                  "by": self.owner_of(params.get("_token") or "")})
        return {"ok": True, "view": {**view, "id": f"VHOME{user_id}"}}
