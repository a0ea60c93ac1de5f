"""Exports a DeiT checkpoint (safetensors, timm tensor names) to ONNX.

Used by bench/forward.js to give onnxruntime-node the same dense model that
evit runs. Plain PyTorch only (no timm): the model is tools/train/evit_model.py
at keep rate 1, the timm VisionTransformer layout (pre-norm blocks, qkv bias,
exact-erf GELU, LayerNorm eps 1e-6, class token, learned position embedding).

    python3 bench/export_onnx.py MODEL.safetensors OUT.onnx --heads 6

The batch axis of the exported graph is dynamic. Opset 17.
"""
import argparse
import math
import os
import sys

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tools', 'reference'))
sys.path.insert(0, os.path.join(HERE, '..', 'tools', 'train'))
import safetensors_io  # noqa: E402
from evit_model import EViT  # noqa: E402


def read_safetensors(path):
    """{name: float32 tensor}, through the shared reader in tools/reference."""
    return {name: torch.from_numpy(a.copy()) for name, a in safetensors_io.read_safetensors(path).items()}


class Dense(nn.Module):
    """The training model of tools/train at keep rate 1: timm's dense ViT."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x, 1.0)


def build(tensors, heads):
    w = tensors['patch_embed.proj.weight']
    dim, in_chans, patch, _ = w.shape
    num_tokens = tensors['pos_embed'].shape[1]
    depth = 1 + max(int(k.split('.')[1]) for k in tensors if k.startswith('blocks.'))
    hidden = tensors['blocks.0.mlp.fc1.weight'].shape[0]
    classes = tensors['head.weight'].shape[0]
    grid = int(math.isqrt(num_tokens - 1))
    model = EViT(grid * patch, patch, in_chans, classes, dim, depth, heads, mlp_ratio=hidden / dim)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ValueError(f'checkpoint does not match: missing {missing}, unexpected {unexpected}')
    return Dense(model).eval(), in_chans, grid * patch


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
