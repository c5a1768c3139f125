"""Slack messages as pure functions, data in, plain-text fallback and Block Kit blocks out; one module a surface:
`blocks` (the building blocks, `escape()` and Slack's limits), `answers` (help, problems, settings, providers),
`jobs` (a job, lists, starts and subscriptions, their buttons), `cards` (announcements, cards, progress, the
watchdog), `money` (holds, approvals, spend)."""
