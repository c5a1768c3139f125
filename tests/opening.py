"""What a process started by `tests/test_storage.py` runs: it opens a store and says whether it came up.

A module of its own so that each spawned process imports only the storage layer: spawned from the test module, each
imported the test module and with it `tests/conftest.py` (the whole bot, its SDKs and the stand-ins), about 1 s of CPU
for each of the 20 processes those tests start, to open one store."""

from __future__ import annotations

from storage import Store


def open_store(location: str, out) -> None:  # noqa: ANN001 - a multiprocessing queue
    try:
        Store(location).close()
        out.put("ok")
    except Exception as error:  # pragma: no cover - reported to the test at once rather than after its timeout
        out.put(repr(error))
