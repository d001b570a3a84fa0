"""SEANet building blocks: weight-normed convolutions with reflect padding, residual blocks, the LSTM."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LSTMState",
    "PaddedConv1d",
    "PaddedConvTranspose1d",
    "ResidualBlock",
    "SkipLSTM",
    "WeightNormConv1d",
    "reflect_pad",
]

LSTMState = tuple[Tensor, Tensor]


class WeightNormConv1d(nn.Module):
    """A (transposed) 1-d convolution kept as bias, weight_g, weight_v, named as torch's legacy weight_norm.

    The weight is weight_v scaled so that each slice along dim 0 has norm weight_g (dim 0 is the
    output channel of a convolution, the input channel of a transposed one).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        transposed: bool = False,
    ) -> None:
        super().__init__()
        # a transposed convolution stores [in, out, k], so weight_g runs over input channels
        shape = (
            (in_channels, out_channels, kernel_size)
            if transposed
            else (out_channels, in_channels, kernel_size)
        )
        # registration order bias, weight_g, weight_v reproduces the official file's key order
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.weight_g = nn.Parameter(torch.empty(shape[0], 1, 1))
        self.weight_v = nn.Parameter(torch.empty(shape))
        self.kernel_size = kernel_size
        self.stride = stride
        self.dilation = dilation
        self.transposed = transposed
        self._cache: tuple[tuple[int, ...], Tensor] | None = None

    def weight(self) -> Tensor:
        """The effective weight; cached for inference until the parameters change or move."""
        if self.training or torch.is_grad_enabled():
            return torch._weight_norm(self.weight_v, self.weight_g, 0)
        key = (
            self.weight_v._version,
            self.weight_g._version,
            self.weight_v.data_ptr(),
            self.weight_g.data_ptr(),
        )
        if self._cache is None or self._cache[0] != key:
            # the same kernel torch's legacy weight_norm calls, so weights match the reference bit for bit
            self._cache = (key, torch._weight_norm(self.weight_v, self.weight_g, 0))
        return self._cache[1]

    def forward(self, x: Tensor) -> Tensor:
        if self.transposed:
            return F.conv_transpose1d(x, self.weight(), self.bias, stride=self.stride)
        return F.conv1d(x, self.weight(), self.bias, stride=self.stride, dilation=self.dilation)


class _ConvSlot(nn.Module):
    """Holds the convolution one level down, where the official key names put it (`conv.conv.*`)."""

    def __init__(self, conv: WeightNormConv1d) -> None:
        super().__init__()
        self.conv = conv


class _ConvTrSlot(nn.Module):
    """The transposed twin of _ConvSlot (`convtr.convtr.*`)."""

    def __init__(self, convtr: WeightNormConv1d) -> None:
        super().__init__()
        self.convtr = convtr


def reflect_pad(x: Tensor, left: int, right: int) -> Tensor:
    """Reflect padding that also works on inputs shorter than the padding (zeros extend them first)."""
    length = x.shape[-1]
    widest = max(left, right)
    extra = widest - length + 1 if length <= widest else 0
    if extra:
        x = F.pad(x, (0, extra))
    padded = F.pad(x, (left, right), mode="reflect")
    return padded[..., : padded.shape[-1] - extra]


class PaddedConv1d(nn.Module):
    """A weight-normed convolution padded (reflect) so that the output has ceil(length / stride) frames."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, dilation: int = 1
    ) -> None:
        super().__init__()
        self.conv = _ConvSlot(
            WeightNormConv1d(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation)
        )
        self.padding_total = (kernel_size - 1) * dilation - (stride - 1)

    def forward(self, x: Tensor) -> Tensor:
        inner = self.conv.conv
        length = x.shape[-1]
        # extra right padding makes the last window full, so no input sample is dropped
        frames = -((inner.kernel_size - self.padding_total - length) // inner.stride) + 1
        extra = (frames - 1) * inner.stride + inner.kernel_size - self.padding_total - length
        right = self.padding_total // 2
        left = self.padding_total - right
        out: Tensor = inner(reflect_pad(x, left, right + extra))
        return out


class PaddedConvTranspose1d(nn.Module):
    """A weight-normed transposed convolution trimmed so that `stride` samples come out per input sample."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int) -> None:
        super().__init__()
        self.convtr = _ConvTrSlot(
            WeightNormConv1d(in_channels, out_channels, kernel_size, stride=stride, transposed=True)
        )
        total = kernel_size - stride
        self.trim_right = total // 2
        self.trim_left = total - self.trim_right

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.convtr.convtr(x)
        return y[..., self.trim_left : y.shape[-1] - self.trim_right]


class ResidualBlock(nn.Module):
    """SEANet's residual block: ELU, dilated conv, ELU, 1x1 conv, plus a weight-normed 1x1 shortcut."""

    def __init__(self, dim: int, *, kernel_size: int, dilation: int, compress: int = 2) -> None:
        super().__init__()
        hidden = dim // compress
        self.block = nn.Sequential(
            nn.ELU(alpha=1.0),
            PaddedConv1d(dim, hidden, kernel_size, dilation=dilation),
            nn.ELU(alpha=1.0),
            PaddedConv1d(hidden, dim, 1),
        )
        self.shortcut = PaddedConv1d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.shortcut(x) + self.block(x)
        return out


class SkipLSTM(nn.Module):
    """An LSTM over [batch, channels, time] with the input added back (repeated twice when bidirectional)."""

    def __init__(self, dim: int, *, num_layers: int, bidirectional: bool) -> None:
        super().__init__()
        self.bidirectional = bidirectional
        self.lstm = nn.LSTM(dim, dim, num_layers, bidirectional=bidirectional)

    def forward(self, x: Tensor) -> Tensor:
        return self.step(x, None)[0]

    def step(self, x: Tensor, state: LSTMState | None) -> tuple[Tensor, LSTMState]:
        """Run on a span of frames from `state` (None: zeros); return the output and the state after it.

        Only a one-directional LSTM can be run span by span this way with the same result as whole.
        """
        seq = x.permute(2, 0, 1)
        y, new_state = self.lstm(seq, state)
        skip = seq.repeat(1, 1, 2) if self.bidirectional else seq
        return (y + skip).permute(1, 2, 0), new_state
