"""Fine-tuning providers: shared types in `types`, one adapter module per API shape."""
