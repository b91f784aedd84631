"""Repository-level pytest configuration: make the checkout importable without installation too."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_configure(config):
    """One torch thread for this repository's tests (PARITY_TEST_THREADS overrides): the tiny model gains
    nothing from a second thread, and on a shared 2-core machine two spinning OpenMP threads made it 10-30x
    slower. Traces record the thread count in their metadata (env.threads)."""
    import os

    import torch

    torch.set_num_threads(int(os.environ.get("PARITY_TEST_THREADS", "1")))
