"""Port kits for the tests, built once per test run (shared by pytest-xdist workers through a lock file).

The tiny kits are not in git: the offline kit of the short bundle is 7 MB (the vocoder's sample-rate tensors are
most of it) and would have to follow every change of the reference; it builds in about 20 s.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from tests.conftest import FIXTURES

SHORT = FIXTURES / "bundles" / "short.safetensors"
MEDIUM = FIXTURES / "bundles" / "medium.safetensors"
# the units the chunked call changes (chunk mask, lookahead context, finalize=False, the cumulative mel), for the
# streaming kit of the tests (the whole streaming kit is built by benchmarks/bench_kit.py)
STREAMING_UNITS = ("pre_lookahead_layer", "prepare", "decoder.estimator.transformer_blocks.0.attn",
                   "decoder.estimator.transformer_blocks.0", "decoder.estimator", "decoder", "f0_predictor",
                   "m_source", "conv_pre", "decode")


def _root(tmp_path_factory) -> Path:
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def shared_kit(tmp_path_factory, name: str, build) -> Path:
    """The kit ``name`` in this test run's shared temporary directory, built by ``build(path)`` by the first worker
    that asks for it."""
    root = _root(tmp_path_factory)
    d = root / f"kit-{name}"
    with open(root / f"kit-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (d / "manifest.json").exists():
            build(d)
    return d


def tiny_model():
    from reference.model import Token2Wav

    return Token2Wav.from_preset("tiny")


def load(model, path):
    from reference.bundle import bundle_dims, load_bundle

    return load_bundle(path, **bundle_dims(model.cfg))


def build_offline(d: Path) -> None:
    from parity.kit.build import BuildOptions, build_kit

    m = tiny_model()
    build_kit(m, load(m, SHORT), d, BuildOptions(bundle_name="short"), bundle_path=str(SHORT))


def build_streaming(d: Path) -> None:
    from parity.kit.build import BuildOptions, build_kit
    from reference.session import SessionOptions

    m = tiny_model()
    build_kit(m, load(m, MEDIUM), d, BuildOptions(streaming=True, session_options=SessionOptions(initial_hop=5),
                                                  units=STREAMING_UNITS, bundle_name="medium"), bundle_path=str(MEDIUM))
