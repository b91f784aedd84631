"""Ensemble members: legitimate re-computations of the reference on the same inputs and noise.

A member is a recipe, run on the reference model itself (never on the candidate being judged):

=================  ===========================================================================================
family             what differs from the plain reference (1 torch thread, explicit attention)
=================  ===========================================================================================
``threads``        the torch thread count (2): the summation order of every kernel that splits its work
``attention``      the DiT's attention by PyTorch SDPA, math kernel or the default kernel (1 or 2 threads)
``mca-modules``    Monte-Carlo arithmetic at every module output (:class:`parity.floor.mca.ModuleMCA`)
``mca-ops``        Monte-Carlo arithmetic at every rounding op (:class:`parity.floor.mca.OpMCA`)
``chop``           a reduced-precision emulation, to nearest (``seed`` None) or stochastic (a seed)
=================  ===========================================================================================

``role`` is ``fit`` (the floor is the maximum over these) or ``held-out`` (used only to choose the gate
multiplier k from data the floor never saw).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass

import torch

from reference.probe import Probe

from ..capture.recorder import Recorder
from .chop import Chop, PrecisionSpec
from .mca import ModuleMCA, OpMCA

FAMILIES = ("plain", "threads", "attention", "mca-modules", "mca-ops", "chop")


@dataclass(frozen=True)
class Member:
    name: str
    family: str
    role: str = "fit"
    threads: int = 1
    attention: str = "explicit"
    seed: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Member":
        return cls(**d)


PLAIN = Member("plain", "plain")  # the baseline: 1 thread, explicit attention, no perturbation


def fp32_members(n_seeds: int = 8, n_held_out: int = 4, families=("threads", "attention", "mca-modules",
                                                                    "mca-ops")) -> list[Member]:
    """The fp32 ensemble: 2 threads; SDPA math and SDPA default (1 thread); ``n_seeds`` fit and ``n_held_out``
    held-out seeds of each MCA family (held-out seeds follow the fit seeds, so a recipe with more fit seeds
    never reuses a held-out one as a fit one within the same recipe)."""
    out: list[Member] = []
    if "threads" in families:
        out.append(Member("threads2", "threads", threads=2))
    if "attention" in families:
        out.append(Member("sdpa-math", "attention", attention="sdpa-math"))
        out.append(Member("sdpa", "attention", attention="sdpa"))
    for fam in ("mca-modules", "mca-ops"):
        if fam in families:
            out += [Member(f"{fam}#{s}", fam, seed=s) for s in range(n_seeds)]
            out += [Member(f"{fam}#{s}", fam, role="held-out", seed=s) for s in range(n_seeds, n_seeds + n_held_out)]
    return out


def chop_members(fmt: str, n_seeds: int = 8, n_held_out: int = 4) -> list[Member]:
    """Round to nearest (the deterministic emulation) with each attention backend (explicit attention rounds
    the scores and the probabilities at its matmuls; SDPA, like a fused low-precision kernel, rounds only
    its output: structurally different legitimate implementations), plus stochastic-rounding seeds."""
    out = [Member(f"chop-{fmt}-nearest", "chop"),
           Member(f"chop-{fmt}-nearest/sdpa-math", "chop", attention="sdpa-math"),
           Member(f"chop-{fmt}-nearest/sdpa", "chop", attention="sdpa")]
    out += [Member(f"chop-{fmt}-sr#{s}", "chop", seed=s) for s in range(n_seeds)]
    out += [Member(f"chop-{fmt}-sr#{s}", "chop", role="held-out", seed=s) for s in range(n_seeds, n_seeds + n_held_out)]
    return out


@contextlib.contextmanager
def _threads(n: int):
    old = torch.get_num_threads()
    if n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


@contextlib.contextmanager
def _attention(model, backend: str):
    est = model.flow.decoder.estimator
    old = est.attention_backend
    est.set_attention(backend)
    try:
        yield
    finally:
        est.set_attention(old)


def member_context(model, member: Member, spec: PrecisionSpec | None = None, gen=None):
    """The context that turns the plain reference into ``member`` (``gen``: the random streams of a batch of
    members of ``member``'s family, :class:`parity.floor.mca.MemberStreams`; default the member's own)."""
    stack = contextlib.ExitStack()
    stack.enter_context(_threads(member.threads))
    stack.enter_context(_attention(model, member.attention))
    if member.family == "mca-modules":
        stack.enter_context(ModuleMCA([model.flow, model.hift], member.seed, gen))
    elif member.family == "mca-ops":
        stack.enter_context(OpMCA([model.flow, model.hift], member.seed, gen))
    elif member.family == "chop":
        if spec is None:
            raise ValueError(f"member {member.name}: a chop member needs a PrecisionSpec")
        stack.enter_context(Chop(model.flow, model.hift, spec, member.seed, gen))
    return stack


def _run(pipeline, inputs: dict, rec: Recorder, streaming: bool, finalize: bool, session) -> None:
    if session is None:
        pipeline.run(inputs, Probe(rec), streaming=streaming, finalize=finalize)
    else:  # a streaming session: upstream's chunked loop (reference.session.run_session), every call recorded
        pipeline.run_session(inputs, Probe(rec), session)


def run_reference(model, inputs: dict, *, streaming: bool, finalize: bool = True, patterns=None,
                  member: Member | None = None, spec: PrecisionSpec | None = None,
                  session=None) -> tuple[dict, float]:
    """Run the reference (plain, or as ``member``) and return (stage tensors, seconds). ``session``: the
    :class:`reference.session.SessionOptions` of a streaming session (the whole chunk loop is the run)."""
    rec = Recorder(patterns)
    t0 = time.perf_counter()
    ctx = member_context(model, member or PLAIN, spec)
    with ctx:
        _run(model, inputs, rec, streaming, finalize, session)
    return rec.tensors, time.perf_counter() - t0


def run_members(model, inputs: dict, members: list[Member], base: dict, *, streaming: bool, finalize: bool = True,
                patterns=None, spec: PrecisionSpec | None = None, session=None) -> tuple[list[dict], float]:
    """Run ``members`` (seeded members of one family, :func:`parity.floor.batched.batch_groups`) along the batch
    axis of one forward; returns (each member's stage tensors, seconds). ``base``: the plain run's stages (their
    shapes tell the members' rows apart). One member runs as :func:`run_reference` does."""
    from .batched import members_on_batch_axis, split_members
    from .mca import MemberStreams

    if len(members) == 1:
        tens, sec = run_reference(model, inputs, streaming=streaming, finalize=finalize, patterns=patterns,
                                  member=members[0], spec=spec, session=session)
        return [tens], sec
    rec = Recorder(patterns)
    t0 = time.perf_counter()
    gen = MemberStreams([m.seed for m in members])
    with member_context(model, members[0], spec, gen), members_on_batch_axis(model, len(members), gen) as pipe:
        _run(pipe, inputs, rec, streaming, finalize, session)
    return split_members(rec.tensors, base, len(members)), time.perf_counter() - t0
