"""The reference CNN and its train step in PyTorch, matched to `fmnist_jax.models.CNN` layer for layer.

Same graph as the JAX model: conv3x3 (no bias: BatchNorm follows, as in flax's
`use_bias=not batch_norm`) -> BatchNorm (momentum 0.1 == flax 0.9, eps 1e-5) -> ReLU,
2x2 max-pool between stages, global average pool, dense. Same step: gather uint8
images by index, random left-right flip, normalise to [-1, 1], cross-entropy, Adam,
plus the loss sum and correct count the JAX step returns. Only imported when torch is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


class ConvBlock(nn.Module):
    """conv3x3 -> BatchNorm -> (+ identity) -> ReLU, as `fmnist_jax.models.ConvBlock`."""

    def __init__(self, c_in: int, c_out: int, residual: bool):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-5, momentum=0.1)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        return torch.relu(y + x if self.residual else y)


class TorchCNN(nn.Module):
    def __init__(
        self,
        widths: Sequence[int] = (32, 64, 56),
        depths: Sequence[int] = (2, 2, 1),
        residual: bool = False,
        num_classes: int = 10,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for stage, (width, depth) in enumerate(zip(widths, depths)):
            if stage:
                layers.append(nn.MaxPool2d(2))
            for _ in range(depth):
                layers.append(ConvBlock(c_in, width, residual and c_in == width))
                c_in = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def make_train_step(
    model: nn.Module,
    images_u8: torch.Tensor,
    labels: torch.Tensor,
    lr: float = 1e-3,
    channels_last: bool = False,
    seed: int = 0,
) -> Callable[[torch.Tensor], tuple[float, int]]:
    """`step(idx) -> (loss_sum, correct)`: one Adam step on the batch `images_u8[idx]`."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt).train()  # type: ignore[call-overload]  # valid; torch's stubs omit memory_format
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)

    def step(idx: torch.Tensor) -> tuple[float, int]:
        x = images_u8[idx].unsqueeze(1).float().div_(255.0)
        flip = torch.rand(len(idx), 1, 1, 1, generator=gen) < 0.5
        x = torch.where(flip, x.flip(3), x).sub_(0.5).div_(0.5).contiguous(memory_format=fmt)
        y = labels[idx]
        logits = model(x)
        losses = nn.functional.cross_entropy(logits, y, reduction="none")
        opt.zero_grad(set_to_none=True)
        losses.mean().backward()
        opt.step()
        return float(losses.detach().sum()), int((logits.detach().argmax(1) == y).sum())

    return step
