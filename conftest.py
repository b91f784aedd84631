"""Repository-level pytest configuration: make the checkout importable without installation too."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_configure(config):
    """One torch thread for this repository's tests (PARITY_TEST_THREADS overrides): the tiny model gains
    nothing from a second thread, and on a shared 2-core machine two spinning OpenMP threads made it 10-30x
    slower. Traces record the thread count in their metadata (env.threads). The same count goes to the
    environment, so the processes tests start (inner pytest runs, CLI subprocesses, bisect trials, xdist
    workers) do not spin a thread per core next to the other worker either."""
    import os

    import torch

    threads = os.environ.get("PARITY_TEST_THREADS", "1")
    torch.set_num_threads(int(threads))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = threads
    # ONNX exports (tests/test_onnx.py, the onnx-* profiles of the parity suite) go to one temporary cache for
    # the whole run, shared by pytest-xdist workers (they inherit the environment; cache writes are atomic
    # renames), never to the user's ~/.cache. A PARITY_ONNX_CACHE given by the caller is kept (full-size exports
    # take minutes).
    if not os.environ.get("PARITY_ONNX_CACHE"):
        import shutil
        import tempfile

        d = tempfile.mkdtemp(prefix="parity-onnx-cache-")
        os.environ["PARITY_ONNX_CACHE"] = d
        config.add_cleanup(lambda: (shutil.rmtree(d, ignore_errors=True), os.environ.pop("PARITY_ONNX_CACHE", None)))
