"""A DeiT-style ViT with EViT token reorganisation, for training.

Tensor names follow timm, so the saved state dict loads in the evit runtime
unchanged. The reorganisation is the authors' (youweiliang/evit): after the
attention of a dropping block, keep the ceil(keep_rate * (N - 1)) image tokens
with the largest head-mean class-token attention, in descending score order,
and fuse the rest into one token weighted by their raw scores.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, keep_rate):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        x = self.proj(x)
        left = math.ceil(keep_rate * (N - 1))
        if keep_rate >= 1 or left >= N - 1:
            return x, None, None
        cls_attn = attn[:, :, 0, 1:].mean(dim=1)  # [B, N-1], not renormalised
        _, idx = torch.topk(cls_attn, left, dim=1, largest=True, sorted=True)
        return x, idx, cls_attn


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio, fuse):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.fuse = fuse

    def forward(self, x, keep_rate):
        a, idx, cls_attn = self.attn(self.norm1(x), keep_rate)
        x = x + a
        if idx is not None:
            B, N, C = x.shape
            non_cls = x[:, 1:]
            kept = torch.gather(non_cls, 1, idx.unsqueeze(-1).expand(-1, -1, C))
            parts = [x[:, :1], kept]
            if self.fuse:
                dropped = torch.ones_like(cls_attn, dtype=torch.bool).scatter_(1, idx, False)
                weights = cls_attn * dropped  # raw scores of the dropped tokens
                parts.append(torch.einsum('bn,bnc->bc', weights, non_cls).unsqueeze(1))
            x = torch.cat(parts, dim=1)
        return x + self.mlp(self.norm2(x))


class EViT(nn.Module):
    def __init__(self, img_size, patch_size, in_chans, num_classes, embed_dim, depth, num_heads,
                 mlp_ratio=4.0, drop_loc=(), fuse=True):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)
        num_patches = (img_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, embed_dim))
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, fuse) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)
        self.drop_loc = tuple(drop_loc)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, img, keep_rate=1.0):
        x = self.patch_embed.proj(img).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for i, blk in enumerate(self.blocks):
            x = blk(x, keep_rate if i in self.drop_loc else 1.0)
        return self.head(self.norm(x)[:, 0])
