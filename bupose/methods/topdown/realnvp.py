"""The RealNVP flow that RLE learns as the prior of its normalised residuals.

Dinh et al., "Density estimation using Real NVP", ICLR 2017; used by Li et al., "Human Pose Regression with
Residual Log-likelihood Estimation", ICCV 2021. Structure and parameter names follow mmpose 1.x's ``RealNVP``
(buffers ``loc``, ``cov``, ``mask``; scale nets ``s.{i}`` and translation nets ``t.{i}``, six coupling layers with
alternating masks ``[0, 1]``, ``[1, 0]``), so the flow of an mmpose RLE checkpoint
(``head.loss_module.flow_model.*``) loads as it is.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def _mlp(scale: bool) -> nn.Sequential:
    layers = [nn.Linear(2, 64), nn.LeakyReLU(), nn.Linear(64, 64), nn.LeakyReLU(), nn.Linear(64, 2)]
    return nn.Sequential(*layers, nn.Tanh()) if scale else nn.Sequential(*layers)


class RealNVP(nn.Module):
    """A 2-D RealNVP: ``log_prob(x (R, 2)) -> (R,)``, the log density of the flow whose base distribution is the
    standard normal ``N(loc, cov)`` (``loc = 0``, ``cov = I``).

    Coupling layer ``i`` (mask ``m_i``) maps latent to data as ``x = m z + (1 - m) (z exp(s(m z)) + t(m z))``;
    ``log_prob`` inverts the layers from the last to the first, ``z = m x + (1 - m) (x - t(m x)) exp(-s(m x))``,
    and adds the log-determinant ``-sum (1 - m) s(m x)`` of each inversion to the base log density.
    The linear layers start Xavier-uniform with gain 0.01 (biases keep PyTorch's default), as mmpose's.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("loc", torch.zeros(2))
        self.register_buffer("cov", torch.eye(2))
        self.register_buffer("mask", torch.tensor([[0, 1], [1, 0]] * 3, dtype=torch.float32))
        self.s = nn.ModuleList(_mlp(scale=True) for _ in range(len(self.mask)))
        self.t = nn.ModuleList(_mlp(scale=False) for _ in range(len(self.mask)))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight, gain=0.01)

    def backward_p(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data ``x (R, 2)`` -> latent ``z (R, 2)`` and the log-determinant of that map's Jacobian ``(R,)``."""
        z, log_det = x, x.new_zeros(x.shape[0])
        for i in reversed(range(len(self.mask))):
            m = self.mask[i]
            kept = m * z
            s = self.s[i](kept) * (1 - m)
            t = self.t[i](kept) * (1 - m)
            z = (1 - m) * (z - t) * torch.exp(-s) + kept
            log_det = log_det - s.sum(dim=1)
        return z, log_det

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log density of the flow at ``x (R, 2)``: ``(R,)``."""
        z, log_det = self.backward_p(x)
        diff = z - self.loc
        cov_inv = torch.linalg.inv(self.cov)
        maha = ((diff @ cov_inv) * diff).sum(dim=1)
        base = -0.5 * (maha + torch.logdet(self.cov) + 2 * math.log(2 * math.pi))
        return base + log_det
