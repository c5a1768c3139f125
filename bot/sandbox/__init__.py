"""Loopback stand-ins for the fine-tuning provider and Slack, used by `finetune-bot shell`, --sandbox and the tests."""
