"""finetune-bot: Slack chat-ops for fine-tuning jobs."""
