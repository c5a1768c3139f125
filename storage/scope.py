"""The workspace the current work is for. In OAuth mode a channel keeps some things per workspace (a Slack Connect
channel is in several): its settings, its spend and budget, its list of follows. Those are read and written as the
workspace the work is for: the request's (set when Slack's request is authorized, carried into the worker pools),
or, for the scheduler's work on a job, the job's owner's (bot/keyring.py `acting_for`). A bot of one workspace never
sets it: its rows are all the one workspace's, kept under ''."""

from __future__ import annotations

import contextvars

WORKSPACE: contextvars.ContextVar[str | None] = contextvars.ContextVar("workspace", default=None)


def current_workspace() -> str:
    """The workspace the rows of this work are kept under ('' for a bot of one workspace, or work for none)."""
    return WORKSPACE.get() or ""
