"""``CausalConditionalCFM``: the Euler solver with classifier-free guidance around the DiT.

Each step builds a batch of 2 (row 0 conditional, row 1 unconditional with mu, spks and cond zeroed,
x kept), calls the estimator once, combines ``v_cfg = (1 + r) * v1 - r * v2`` and takes an Euler step.
The step is a method of its own so the harness can drive it from the reference's own tensors.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import CFMConfig
from .dit import DiT
from .probe import NO_PROBE, Probe


def time_span(n_timesteps: int, scheduler: str, dtype=torch.float32, device=None) -> torch.Tensor:
    """``linspace(0, 1, n+1)``, then ``1 - cos(s * pi/2)`` for the cosine scheduler (in mu's dtype)."""
    t_span = torch.linspace(0, 1, n_timesteps + 1, device=device, dtype=dtype)
    if scheduler == "cosine":
        t_span = 1 - torch.cos(t_span * 0.5 * torch.pi)
    return t_span


class CausalConditionalCFM(nn.Module):
    def __init__(self, cfg: CFMConfig):
        super().__init__()
        self.cfg = cfg
        self.t_scheduler = cfg.cfm_params.t_scheduler
        self.inference_cfg_rate = cfg.cfm_params.inference_cfg_rate
        self.estimator = DiT(cfg.estimator)

    def cfg_batch(self, x, mask, mu, t, spks, cond):
        """The batch-of-2 inputs of one step, created in spks' dtype as upstream does."""
        T, dt_ = x.size(2), spks.dtype
        x_in = torch.zeros([2, x.size(1), T], device=x.device, dtype=dt_)
        mask_in = torch.zeros([2, 1, T], device=x.device, dtype=dt_)
        mu_in = torch.zeros([2, mu.size(1), T], device=x.device, dtype=dt_)
        t_in = torch.zeros([2], device=x.device, dtype=dt_)
        spks_in = torch.zeros([2, spks.size(1)], device=x.device, dtype=dt_)
        cond_in = torch.zeros([2, cond.size(1), T], device=x.device, dtype=dt_)
        x_in[:] = x
        mask_in[:] = mask
        mu_in[0] = mu
        t_in[:] = t.reshape(1, -1)[0, :1]
        spks_in[0] = spks
        cond_in[0] = cond
        return x_in, mask_in, mu_in, t_in, spks_in, cond_in  # row 1: mu, spks, cond zero; x kept

    def combine(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        r = self.inference_cfg_rate
        return (1.0 + r) * v1 - r * v2

    def step(self, x, t, dt, mu, mask, spks, cond, streaming: bool = False, probe: Probe = NO_PROBE):
        """One Euler/CFG step from state x at time t. Returns ``(x_next, v1, v2, v_cfg)``."""
        v = self.estimator(*self.cfg_batch(x, mask, mu, t, spks, cond), streaming=streaming, probe=probe)
        v1, v2 = torch.split(v, [x.size(0), x.size(0)], dim=0)
        v_cfg = self.combine(v1, v2)
        return x + dt * v_cfg, v1, v2, v_cfg

    def solve_euler(self, x, t_span, mu, mask, spks, cond, streaming: bool = False, probe: Probe = NO_PROBE):
        t, dt = t_span[0], t_span[1] - t_span[0]
        t = t.unsqueeze(dim=0)
        n = len(t_span) - 1
        for k in range(1, n + 1):
            sp = probe.sub(f"step{k}.")
            sp("t", t)
            sp("dt", dt.reshape(1))
            x, v1, v2, v_cfg = self.step(x, t, dt, mu, mask, spks, cond, streaming, sp)
            sp("v1", v1)
            sp("v2", v2)
            sp("v_cfg", v_cfg)
            sp("x", x)
            t = t + dt
            if k < n:
                dt = t_span[k + 1] - t
        return x.float() if x.dtype != torch.float64 else x  # upstream returns float32; fp64 arbiter keeps fp64

    def forward(self, mu, mask, n_timesteps, spks, cond, noise: torch.Tensor, temperature: float = 1.0,
                streaming: bool = False, probe: Probe = NO_PROBE):
        """``noise`` is the shared ``rand_noise`` slice [1, 80, T]; the solver never draws randoms."""
        z = noise.to(mu.device).to(mu.dtype) * temperature
        probe("x0", z)
        t_span = time_span(n_timesteps, self.t_scheduler, mu.dtype, mu.device)
        return self.solve_euler(z, t_span, mu, mask, spks, cond, streaming, probe)
