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


def test_a_transposed_convolution_counts_each_input_value_spread_over_its_kernel():
    deconv = nn.ConvTranspose2d(3, 5, kernel_size=4, stride=2, padding=1, bias=True)
    params, macs = count_params_macs(deconv, (6, 4))
    assert params == 3 * 5 * 16 + 5
    # by hand: every one of the 3 * 6 * 4 input values meets 5 * 4 * 4 weights; one bias add per output value
    assert macs == 3 * 6 * 4 * 5 * 16 + 5 * 12 * 8
    grouped = nn.ConvTranspose2d(4, 4, kernel_size=2, stride=2, groups=4, bias=False)
    assert count_params_macs(grouped, (3, 3), in_channels=4)[1] == 4 * 9 * 1 * 4
