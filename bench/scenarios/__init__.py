"""One module a benchmark scenario; `bench/run.py` holds the registry that names them."""
