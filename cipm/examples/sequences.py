"""Example transformers (encoder classifiers, a GPT, a BERT-style encoder): plain PyTorch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SequenceClassifier(nn.Module):
    """nn.TransformerEncoder between an input projection and a classification head."""

    def __init__(
        self,
        norm_first: bool,
        d_in: int = 6,
        d: int = 16,
        heads: int = 4,
        layers: int = 2,
        classes: int = 3,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(d_in, d)
        layer = nn.TransformerEncoderLayer(
            d, heads, 2 * d, dropout=0.1, batch_first=True, norm_first=norm_first
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x)).mean(dim=1))


def transformer_encoder(norm_first: bool = False) -> tuple[nn.Module, torch.Tensor]:
    return SequenceClassifier(norm_first).eval(), torch.randn(2, 5, 6)


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections (BERT and GPT style)."""

    def __init__(self, d: int, heads: int, causal: bool) -> None:
        super().__init__()
        self.heads, self.head_dim, self.causal = heads, d // heads, causal
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (
            p(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
            for p in (self.query, self.key, self.value)
        )
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.out(y.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))


class Block(nn.Module):
    def __init__(self, d: int, heads: int, ff: int, causal: bool, pre_norm: bool) -> None:
        super().__init__()
        self.attn = Attention(d, heads, causal)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Linear(ff, d))
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))
        x = self.ln1(x + self.attn(x))
        return self.ln2(x + self.mlp(x))


class GPT(nn.Module):
    """Decoder-only LM: causal SDPA, GELU MLP, pre-LayerNorm, output head tied to embedding."""

    def __init__(
        self, vocab: int = 50, d: int = 32, heads: int = 4, layers: int = 2, context: int = 16
    ) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(context, d)
        self.blocks = nn.ModuleList(Block(d, heads, 4 * d, True, True) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def gpt() -> tuple[nn.Module, torch.Tensor]:
    return GPT().eval(), torch.randint(0, 50, (2, 8))


class Encoder(nn.Module):
    """BERT-style classifier: embeddings, LayerNorm, post-norm blocks, pooler on token 0."""

    def __init__(
        self,
        vocab: int = 100,
        d: int = 32,
        heads: int = 4,
        layers: int = 2,
        ff: int = 64,
        context: int = 16,
    ) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(context, d)
        self.ln = nn.LayerNorm(d)
        self.blocks = nn.ModuleList(Block(d, heads, ff, False, False) for _ in range(layers))
        self.pooler = nn.Linear(d, d)
        self.classifier = nn.Linear(d, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.ln(self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device)))
        for block in self.blocks:
            x = block(x)
        return self.classifier(torch.tanh(self.pooler(x[:, 0])))


def encoder() -> tuple[nn.Module, torch.Tensor]:
    return Encoder().eval(), torch.randint(0, 100, (2, 8))


def bert_base() -> tuple[nn.Module, torch.Tensor]:
    """BERT-base sized: 12 layers, hidden 768, 12 heads, intermediate 3072 (~110 M params)."""
    model = Encoder(vocab=30522, d=768, heads=12, layers=12, ff=3072, context=512)
    return model.eval(), torch.randint(0, 30522, (1, 128))
