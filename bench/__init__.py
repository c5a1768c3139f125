"""finetune-bot's benchmarks: `python bench/run.py` (see its docstring), a scenario a module."""
