"""`bench/run.py` as the tests' smoke runs start it (tests/test_bench.py): forked from the test run's zygote, and
forking the `serve` processes it starts from there too (but those its memory figures measure, always exec'd:
`ServeProcess(fresh=True)`). The benchmarks themselves never import the tests."""

from bench import processes
from bench.run import main
from tests import zygote

if __name__ == "__main__":
    processes.DEFAULT_LAUNCH = zygote.launch
    main()
