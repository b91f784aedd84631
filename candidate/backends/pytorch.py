"""The ``torch`` backend: the candidate's own PyTorch estimator (:class:`candidate.dit.CandidateDiT`), on which
every switch (attention kernels, precision, fusions, compilation, int8) and every estimator fault acts."""

from __future__ import annotations

from .base import Backend


class TorchBackend(Backend):
    name = "torch"
    description = "the candidate's own PyTorch estimator"

    def build_estimator(self, ref_estimator, sw, faults, kernels, device: str):
        from ..dit import CandidateDiT

        return CandidateDiT(ref_estimator, sw, faults, kernels, device)
