"""Slack-facing listeners: thin functions that ack, parse, call a service and reply."""

from slack_bolt import App

from handlers import actions, commands, errors, home, installs, keys, moves, trying, views


def register(app: App, services) -> None:
    errors.register(app, services)
    commands.register(app, services)
    actions.register(app, services)
    views.register(app, services)
    trying.register(app, services)
    moves.register(app, services)
    installs.register(app, services)
    home.register(app, services)
    keys.register(app, services)
