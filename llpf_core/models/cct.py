"""CCT-7/3x1: Compact Convolutional Transformer for 32x32 images (Hassani et al., 2021).

"Escaping the big data paradigm with compact transformers" (SHI-Labs/Compact-Transformers,
`cct_7_3x1_32`). A single 3x3 convolution (256 channels, ReLU, 3x3 stride-2 max-pooling) turns a
32x32 image into 256 tokens of width 256; a learnable positional embedding is added; seven
transformer encoder blocks (4 heads, MLP ratio 2) follow, a LayerNorm, then sequence pooling (a
softmax-weighted mean of the tokens, the weights from a linear layer) and the linear classifier.
Module names are the reference's, which the paper's CCT phases (Table 2) address:
`tokenizer.conv_layers`, `classifier.positional_emb`, `classifier.blocks.0` .. `.6`,
`classifier.norm`, `classifier.attention_pool`, `classifier.fc`.

The reference's regularisation is kept: attention dropout 0.1, no other dropout, stochastic depth
rising linearly from 0 (first block) to 0.1 (last). Both draw from torch's global generator, so
a seeded run is reproducible; both are off in eval mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llpf_core.models.registry import ArchSpec, register


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability `p` while training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class Attention(nn.Module):
    """Multi-head self-attention with one bias-free QKV projection and a biased output one."""

    def __init__(self, dim: int, heads: int, attention_dropout: float = 0.1) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding dim {dim} is not divisible by heads={heads}")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_drop = nn.Dropout(attention_dropout)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape

        # (B, N, 3*D) -> 3 x (B, heads, N, D/heads)
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)

        weights = self.attn_drop(torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1))
        out = (weights @ v).transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj(out)


class EncoderBlock(nn.Module):
    """CCT's encoder layer: pre-norm attention with a residual, then LayerNorm, then the MLP.

    Note the reference's order: `norm1` normalises the stream itself (not a copy for the MLP),
    and the MLP's output is added to the normalised stream.
    """

    def __init__(
        self, dim: int, heads: int, mlp_dim: int, attention_dropout: float, drop_path: float
    ) -> None:
        super().__init__()
        self.pre_norm = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads, attention_dropout)
        self.linear1 = nn.Linear(dim, mlp_dim)
        self.norm1 = nn.LayerNorm(dim)
        self.linear2 = nn.Linear(mlp_dim, dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.self_attn(self.pre_norm(x)))
        x = self.norm1(x)
        return x + self.drop_path(self.linear2(F.gelu(self.linear1(x))))


class Tokenizer(nn.Module):
    """Convolutional tokenizer: (B, 3, H, W) -> (B, H/2 * W/2, dim) with one conv layer."""

    def __init__(self, dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        # the reference's defaults: stride 1 and padding 1 for a 3x3 kernel
        stride, padding = max(1, kernel_size // 2 - 1), kernel_size // 2
        conv = nn.Conv2d(3, dim, kernel_size, stride=stride, padding=padding, bias=False)
        nn.init.kaiming_normal_(conv.weight)
        layer = nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        self.conv_layers = nn.Sequential(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_layers(x).flatten(2).transpose(1, 2)


class TransformerClassifier(nn.Module):
    """Positional embedding, encoder blocks, LayerNorm, sequence pooling and `fc`."""

    def __init__(
        self,
        tokens: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        num_classes: int,
        attention_dropout: float,
        stochastic_depth: float,
    ) -> None:
        super().__init__()
        self.attention_pool = nn.Linear(dim, 1)
        self.positional_emb = nn.Parameter(torch.zeros(1, tokens, dim))
        nn.init.trunc_normal_(self.positional_emb, std=0.2)

        rates = torch.linspace(0, stochastic_depth, depth).tolist()
        mlp_dim = int(dim * mlp_ratio)
        self.blocks = nn.ModuleList(
            EncoderBlock(dim, heads, mlp_dim, attention_dropout, rate) for rate in rates
        )
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.positional_emb
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)

        # sequence pooling: (B, N, D) weighted by softmax over N of (B, N, 1) -> (B, D)
        weights = torch.softmax(self.attention_pool(x), dim=1)
        x = (weights.transpose(1, 2) @ x).squeeze(1)
        return self.fc(x)


class CCT(nn.Module):
    """Compact Convolutional Transformer: `tokenizer`, then `classifier`; logits (B, classes)."""

    def __init__(
        self,
        num_classes: int = 10,
        image_size: int = 32,
        dim: int = 256,
        depth: int = 7,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        kernel_size: int = 3,
        attention_dropout: float = 0.1,
        stochastic_depth: float = 0.1,
    ) -> None:
        super().__init__()
        self.tokenizer = Tokenizer(dim, kernel_size)
        with torch.no_grad():
            tokens = self.tokenizer(torch.zeros(1, 3, image_size, image_size)).shape[1]
        self.classifier = TransformerClassifier(
            tokens, dim, depth, heads, mlp_ratio, num_classes, attention_dropout, stochastic_depth
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.tokenizer(x))


def cct7(num_classes: int = 10, stochastic_depth: float = 0.1) -> CCT:
    """CCT-7/3x1 for 32x32 images (Hassani et al., 2021; `cct_7_3x1_32`, learnable positions).

    7 blocks, width 256, 4 heads, MLP ratio 2, one 3x3 conv layer; logits (B, num_classes).
    3,760,139 parameters for 10 classes, which SHI-Labs/Compact-Transformers lists as 3.760M.
    """
    return CCT(num_classes=num_classes, stochastic_depth=stochastic_depth)


register(
    ArchSpec(
        name="cct7",
        factory=cct7,
        datasets=("cifar10", "cifar100"),
        recipes={"cifar10": "cct7-cifar10", "cifar100": "cct7-cifar10"},
        preset="cct7",
        description="Compact Convolutional Transformer CCT-7/3x1 (SHI-Labs/Compact-Transformers)",
    )
)
