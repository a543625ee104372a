"""Parameter and MAC counting (bupose.models.complexity): a module's declared activation products are added to its
layers' counts."""
import torch
from torch import nn

from bupose.models.complexity import count_params_macs


class _Attention(nn.Module):
    """Single-head self-attention over the pixels of a (1, C, H, W) map."""

    def __init__(self, c=4):
        super().__init__()
        self.qkv = nn.Linear(c, 3 * c, bias=False)

    def forward(self, x):
        t = x.flatten(2).transpose(1, 2)  # (1, N, C)
        q, k, v = self.qkv(t).chunk(3, dim=-1)
        return ((q @ k.transpose(1, 2)).softmax(-1) @ v).transpose(1, 2).reshape(x.shape)

    def matmul_macs(self, inputs, output):
        n, c = inputs[0].shape[2] * inputs[0].shape[3], inputs[0].shape[1]
        return 2 * n * n * c


def test_declared_activation_products_are_added_to_the_layers_macs():
    model = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), _Attention(4))
    params, macs = count_params_macs(model, (2, 3))
    n = 6
    assert params == 3 * 4 + 4 * 12
    assert macs == n * 4 * 3 + n * 12 * 4 + 2 * n * n * 4  # conv, qkv linear, q k^T and attn v
    plain = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False))
    assert count_params_macs(plain, (2, 3))[1] == n * 4 * 3
    assert model(torch.ones(1, 3, 2, 3)).shape == (1, 4, 2, 3)
