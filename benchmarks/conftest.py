import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _bench_threads():
    """Benchmarks use the machine's 2 cores (PARITY_BENCH_THREADS overrides); the test suite uses one."""
    torch.set_num_threads(int(os.environ.get("PARITY_BENCH_THREADS", "2")))
