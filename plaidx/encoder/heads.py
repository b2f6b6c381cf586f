"""Projection heads that map backbone hidden states to ColBERT vectors.

- Stanford / jina checkpoints: one ``linear.weight`` (dim, hidden) without bias; extra top-level
  ``linear_<size>.weight`` (or ``linears.<size>.weight``) matrices, when a checkpoint ships them, are
  Matryoshka heads of that size.
- PyLate: one or more sentence-transformers ``Dense`` modules applied in order (Linear, optional bias,
  activation, optional residual).
- Plain encoders: no head (identity), the hidden states themselves.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..errors import CheckpointError

# Activation names as sentence-transformers/PyLate record them (module path or bare class name). Only
# these are accepted: a checkpoint never makes plaidx import an arbitrary class.
_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "Identity": nn.Identity, "Tanh": nn.Tanh, "ReLU": nn.ReLU, "GELU": nn.GELU, "Sigmoid": nn.Sigmoid,
    "SiLU": nn.SiLU, "LeakyReLU": nn.LeakyReLU, "Softplus": nn.Softplus,
}

_EXTRA_HEAD = re.compile(r"^linears?[_.-]?(\d+)\.weight$")  # linear_96.weight, linears.64.weight, ...


def activation_from_name(name: str | None) -> nn.Module:
    """nn.Module for a recorded activation name such as 'torch.nn.modules.activation.Tanh'."""

    if name is None:
        return nn.Identity()
    short = str(name).rsplit(".", 1)[-1]
    if short not in _ACTIVATIONS or not (str(name) == short or str(name).startswith("torch.")):
        raise CheckpointError(f"Dense activation_function {name!r} is not supported "
                              f"(known: {', '.join(sorted(_ACTIVATIONS))})")
    return _ACTIVATIONS[short]()


class DenseLayer(nn.Module):
    """sentence-transformers/PyLate Dense: ``act(linear(x))`` (+ residual when the config asks for it)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 activation: str | None = None, use_residual: bool = False):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.activation = activation_from_name(activation)
        self.use_residual = use_residual
        self.residual = (nn.Linear(in_features, out_features, bias=False)
                         if use_residual and in_features != out_features else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.activation(self.linear(x))
        if self.use_residual:
            y = y + (self.residual(x) if self.residual is not None else x)
        return y


class Projection(nn.Module):
    """The main head (a sequence of layers, possibly empty) plus optional Matryoshka heads by size."""

    def __init__(self, layers: list[nn.Module], out_dim: int, extra: dict[int, nn.Linear] | None = None):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.out_dim = out_dim
        self.extra = nn.ModuleDict({str(k): v for k, v in sorted((extra or {}).items())})

    @property
    def head_sizes(self) -> list[int]:
        """Output sizes for which the checkpoint has a dedicated head (the main one included)."""
        return sorted({self.out_dim, *(int(k) for k in self.extra)}, reverse=True)

    def forward(self, hidden: torch.Tensor, size: int | None = None) -> torch.Tensor:
        if size is not None and size != self.out_dim:
            return self.extra[str(size)](hidden)
        for layer in self.layers:
            hidden = layer(hidden)
        return hidden


def stanford_projection(tensors: dict[str, torch.Tensor], hidden_size: int) -> Projection:
    """Projection from top-level ``linear.weight`` (and ``linear_<n>.weight`` Matryoshka heads)."""

    if "linear.weight" not in tensors:
        raise CheckpointError("the checkpoint has no 'linear.weight' (the ColBERT projection head)")

    def make(name: str) -> nn.Linear:
        w = tensors[name]
        if w.ndim != 2 or w.shape[1] != hidden_size or w.shape[0] == 0:
            raise CheckpointError(f"'{name}' has shape {tuple(w.shape)}; expected (dim, {hidden_size}) "
                                  f"to match the backbone's hidden size")
        if name.replace(".weight", ".bias") in tensors:
            lin = nn.Linear(w.shape[1], w.shape[0], bias=True)
            lin.bias.data.copy_(tensors[name.replace(".weight", ".bias")].float())
        else:
            lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
        lin.weight.data.copy_(w.float())
        return lin

    main = make("linear.weight")
    extra: dict[int, nn.Linear] = {}
    for name in tensors:
        m = _EXTRA_HEAD.match(name)
        if m:
            lin = make(name)
            if lin.out_features != int(m.group(1)):
                raise CheckpointError(f"'{name}' has {lin.out_features} outputs; its name says {m.group(1)}")
            if lin.out_features != main.out_features:
                extra[lin.out_features] = lin
    return Projection([main], main.out_features, extra)
