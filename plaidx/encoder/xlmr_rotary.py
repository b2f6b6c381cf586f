"""The jina-colbert-v2 backbone: an XLM-RoBERTa with rotary position embeddings, written for plaidx.

The published checkpoint points its config.json at remote code that plaidx never fetches or executes.
This module reimplements that architecture from its weight layout so the checkpoint loads as it is:

- embeddings: ``embeddings.word_embeddings`` (+ ``embeddings.token_type_embeddings`` when present, type 0),
  no absolute position table, then the ``emb_ln`` LayerNorm;
- ``encoder.layers.{i}``: post-LayerNorm blocks ``x = norm1(x + mixer(x)); x = norm2(x + mlp(x))``;
- ``mixer.Wqkv`` is one Linear producing ``[q | k | v]`` (each ``heads * head_dim`` wide, heads contiguous),
  ``mixer.out_proj`` the output projection;
- rotary embedding on q and k over the first ``rotary_dim`` channels of every head, positions ``0..L-1``,
  ``inv_freq[i] = base ** (-2i / rotary_dim)``; by default the GPT-NeoX convention (channel ``j`` is paired
  with ``j + rotary_dim/2``, "rotate_half"); ``rotary_emb_interleaved: true`` pairs ``2j`` with ``2j+1``;
- ``mlp.fc1`` -> GELU -> ``mlp.fc2``.

Padding is on the right and masked out of the keys, so padded positions never change real tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError

_GELU_APPROX = {"gelu": "none", "gelu_new": "tanh", "gelu_fast": "tanh", "gelu_pytorch_tanh": "tanh"}


@dataclass(frozen=True)
class RotaryXLMRConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    hidden_act: str = "gelu"
    rotary_emb_base: float = 10000.0
    rotary_emb_dim: int | None = None  # None: the whole head
    rotary_emb_interleaved: bool = False
    max_position_embeddings: int = 8194
    pad_token_id: int = 1

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rotary_dim(self) -> int:
        return self.head_dim if self.rotary_emb_dim is None else int(self.rotary_emb_dim)

    @classmethod
    def from_dict(cls, cfg: dict[str, Any], shapes: dict[str, tuple[int, ...]] | None = None) -> RotaryXLMRConfig:
        """Read the fields from a config.json dict; sizes that the weights pin down are taken from them."""

        shapes = shapes or {}

        def need(key: str) -> Any:
            if key not in cfg:
                raise CheckpointError(f"config.json: missing {key!r}, needed for the rotary XLM-RoBERTa backbone")
            return cfg[key]

        act = cfg.get("hidden_act", "gelu")
        if act not in _GELU_APPROX:
            raise CheckpointError(f"config.json: hidden_act {act!r} is not supported by the rotary backbone "
                                  f"(expected one of {sorted(_GELU_APPROX)})")
        if cfg.get("rotary_emb_scale_base") not in (None, 0):
            raise CheckpointError("config.json: rotary_emb_scale_base (XPos scaling) is not supported")
        pe = cfg.get("position_embedding_type", "rotary")
        if pe != "rotary":
            raise CheckpointError(f"config.json: position_embedding_type {pe!r}; this backbone implements 'rotary'")
        vocab = shapes.get("embeddings.word_embeddings.weight", (need("vocab_size"),))[0]
        types = shapes.get("embeddings.token_type_embeddings.weight", (0,))[0]
        hidden = int(need("hidden_size"))
        heads = int(need("num_attention_heads"))
        if hidden % heads:
            raise CheckpointError(f"config.json: hidden_size {hidden} is not divisible by num_attention_heads {heads}")
        rot = cfg.get("rotary_emb_dim")
        if rot is not None:
            rot = int(rot)
            if rot % 2 or not 0 <= rot <= hidden // heads:
                raise CheckpointError(f"config.json: rotary_emb_dim {rot} must be even and at most the head size "
                                      f"{hidden // heads}")
        return cls(
            vocab_size=int(vocab), hidden_size=hidden, num_hidden_layers=int(need("num_hidden_layers")),
            num_attention_heads=heads, intermediate_size=int(need("intermediate_size")),
            type_vocab_size=int(types), layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-5)),
            hidden_act=act, rotary_emb_base=float(cfg.get("rotary_emb_base", 10000.0)), rotary_emb_dim=rot,
            rotary_emb_interleaved=bool(cfg.get("rotary_emb_interleaved", False)),
            max_position_embeddings=int(cfg.get("max_position_embeddings", 8194)),
            pad_token_id=int(cfg.get("pad_token_id", 1)),
        )


def rotary_cos_sin(seq_len: int, rotary_dim: int, base: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (seq_len, rotary_dim // 2), computed in float32."""
    inv_freq = 1.0 / (base ** (torch.arange(0, rotary_dim, 2, device=device, dtype=torch.float32) / rotary_dim))
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """Rotate the first 2 * cos.shape[-1] channels of x (batch, heads, seq, head_dim) by position."""
    rd = 2 * cos.shape[-1]
    if rd == 0:
        return x
    rot, rest = x[..., :rd].float(), x[..., rd:]
    cos, sin = cos[None, None], sin[None, None]
    if interleaved:
        a, b = rot[..., 0::2], rot[..., 1::2]
        out = torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).flatten(-2)
    else:
        a, b = rot[..., : rd // 2], rot[..., rd // 2:]
        out = torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)
    return torch.cat((out.to(x.dtype), rest), dim=-1)


class _Embeddings(nn.Module):
    def __init__(self, cfg: RotaryXLMRConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.token_type_embeddings = (nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
                                      if cfg.type_vocab_size > 0 else None)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(input_ids)
        if self.token_type_embeddings is not None:
            x = x + self.token_type_embeddings.weight[0]
        return x


class _Mixer(nn.Module):
    def __init__(self, cfg: RotaryXLMRConfig):
        super().__init__()
        self.heads, self.head_dim = cfg.num_attention_heads, cfg.head_dim
        self.rotary_dim, self.base = cfg.rotary_dim, cfg.rotary_emb_base
        self.interleaved = cfg.rotary_emb_interleaved
        self.Wqkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.out_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None,
                cos_sin: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.Wqkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (b, heads, n, head_dim)
        q = apply_rotary(q, *cos_sin, self.interleaved)
        k = apply_rotary(k, *cos_sin, self.interleaved)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))


class _Mlp(nn.Module):
    def __init__(self, cfg: RotaryXLMRConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.approximate = _GELU_APPROX[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


class _Block(nn.Module):
    def __init__(self, cfg: RotaryXLMRConfig):
        super().__init__()
        self.mixer = _Mixer(cfg)
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = _Mlp(cfg)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None,
                cos_sin: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = self.norm1(x + self.mixer(x, key_mask, cos_sin))
        return self.norm2(x + self.mlp(x))


class _Encoder(nn.Module):
    def __init__(self, cfg: RotaryXLMRConfig):
        super().__init__()
        self.layers = nn.ModuleList(_Block(cfg) for _ in range(cfg.num_hidden_layers))


class RotaryXLMRoberta(nn.Module):
    """Token-level encoder; module names match the checkpoint's state dict under its ``roberta.`` prefix."""

    def __init__(self, cfg: RotaryXLMRConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = _Embeddings(cfg)
        self.emb_ln = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.encoder = _Encoder(cfg)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Last hidden states (batch, seq, hidden) for right-padded input_ids."""
        x = self.emb_ln(self.embeddings(input_ids))
        n = input_ids.shape[1]
        cos_sin = rotary_cos_sin(n, self.config.rotary_dim, self.config.rotary_emb_base, input_ids.device)
        key_mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            key_mask = attention_mask.bool()[:, None, None, :]
        for layer in self.encoder.layers:
            x = layer(x, key_mask, cos_sin)
        return x
