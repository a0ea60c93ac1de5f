"""Exports a DeiT checkpoint (safetensors, timm tensor names) to ONNX.

Used by bench/forward.js to give onnxruntime-node the same dense model that
evit runs. Plain PyTorch only (no timm): the model below is the timm
VisionTransformer layout (pre-norm blocks, qkv bias, exact-erf GELU,
LayerNorm eps 1e-6, class token, learned position embedding).

    python3 bench/export_onnx.py MODEL.safetensors OUT.onnx --heads 6

The batch axis of the exported graph is dynamic. Opset 17.
"""
import argparse
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tools', 'reference'))
import safetensors_io  # noqa: E402


def read_safetensors(path):
    """{name: float32 tensor}, through the shared reader in tools/reference."""
    return {name: torch.from_numpy(a.copy()) for name, a in safetensors_io.read_safetensors(path).items()}


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, in_chans, dim, patch):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class DeiT(nn.Module):
    def __init__(self, in_chans, dim, patch, num_tokens, depth, heads, hidden, classes):
        super().__init__()
        self.patch_embed = PatchEmbed(in_chans, dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, dim))
        self.blocks = nn.ModuleList([Block(dim, heads, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch_embed(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])


def build(tensors, heads):
    w = tensors['patch_embed.proj.weight']
    dim, in_chans, patch, _ = w.shape
    num_tokens = tensors['pos_embed'].shape[1]
    depth = 1 + max(int(k.split('.')[1]) for k in tensors if k.startswith('blocks.'))
    hidden = tensors['blocks.0.mlp.fc1.weight'].shape[0]
    classes = tensors['head.weight'].shape[0]
    model = DeiT(in_chans, dim, patch, num_tokens, depth, heads, hidden, classes)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ValueError(f'checkpoint does not match: missing {missing}, unexpected {unexpected}')
    grid = int(math.isqrt(num_tokens - 1))
    return model.eval(), in_chans, grid * patch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('checkpoint')
    ap.add_argument('output')
    ap.add_argument('--heads', type=int, required=True)
    ap.add_argument('--opset', type=int, default=17)
    args = ap.parse_args()

    torch.set_num_threads(1)
    model, in_chans, img = build(read_safetensors(args.checkpoint), args.heads)
    dummy = torch.zeros(1, in_chans, img, img)
    with torch.no_grad():
        torch.onnx.export(
            model, dummy, args.output,
            input_names=['input'], output_names=['logits'],
            dynamic_axes={'input': {0: 'batch'}, 'logits': {0: 'batch'}},
            opset_version=args.opset, do_constant_folding=True,
        )
    print(f'exported {args.output} (torch {torch.__version__}, opset {args.opset})', file=sys.stderr)


if __name__ == '__main__':
    main()
