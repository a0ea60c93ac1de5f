"""Plain float64 reference of the Shunted Transformer forward pass.

Written from tools/reference/SHUNTED.md (the description of the authors'
SSA.py, github OliverRensu/Shunted-Transformer), independently of the
runtime in lib/, src/ and cuda/, and without timm or the authors' module.
Only elementary tensor operations are used (matmul, erf, exp, sums) plus
F.conv2d for the convolutions, all in float64.

Weights are a dict of float64 tensors with the authors' state-dict names.
Integer tensors (BatchNorm's num_batches_tracked) may be present and are
ignored.
"""

import math
import re

import torch
import torch.nn.functional as F

# nn.LayerNorm's default: the stem norm, the OverlapPatchEmbed norms and the
# attention's norm1/norm2 (after sr1/sr2) are built without norm_layer.
LN_EPS_DEFAULT = 1e-5
# norm_layer = partial(nn.LayerNorm, eps=1e-6): the blocks' norm1/norm2 and
# the per-stage norms norm1..norm4.
LN_EPS_MODEL = 1e-6
BN_EPS = 1e-5
NUM_STAGES = 4

# The released variants (SSA.py: shunted_t, shunted_s, shunted_b).
NAMED_ARCHS = {
    "shunted_t": dict(embed_dims=[64, 128, 256, 512], depths=[1, 2, 4, 1], num_heads=[2, 4, 8, 16],
                      mlp_ratios=[8, 8, 4, 4], sr_ratios=[8, 4, 2, 1], num_conv=0),
    "shunted_s": dict(embed_dims=[64, 128, 256, 512], depths=[2, 4, 12, 1], num_heads=[2, 4, 8, 16],
                      mlp_ratios=[8, 8, 4, 4], sr_ratios=[8, 4, 2, 1], num_conv=1),
    "shunted_b": dict(embed_dims=[64, 128, 256, 512], depths=[3, 4, 24, 2], num_heads=[2, 4, 8, 16],
                      mlp_ratios=[8, 8, 4, 4], sr_ratios=[8, 4, 2, 1], num_conv=2),
}

# Deliberate departures from the authors' model, used only by the fixture
# generator to show that the goldens tell them apart from the real thing.
MUTATIONS = frozenset([
    "ln_eps_all_1e-6",      # every LayerNorm with eps 1e-6
    "ln_eps_all_1e-5",      # every LayerNorm with eps 1e-5
    "no_batchnorm",         # stem BatchNorms left out
    "gelu_tanh",            # tanh-approximated GELU
    "local_conv_on_v_sr1",  # sr = 1: local conv added to v before attention (as for sr > 1)
    "no_local_conv_sr",     # sr > 1: local_conv1/local_conv2 left out
    "swap_head_groups",     # sr > 1: first half of the heads attends to the sr2 (finer) keys
    "v_before_k",           # kv / kv1 / kv2 read as [v | k] instead of [k | v]
    "mlp_dwconv_no_residual",  # MLP: GELU(dwconv(fc1 x)) without the + fc1 x
    "cls_last_token",       # head on the last token instead of the mean over tokens
])


# ---------------------------------------------------------------------------
# Architecture from tensor names and shapes
# ---------------------------------------------------------------------------

def infer_architecture(W):
    """Dimensions the tensors determine (everything except the heads)."""
    bn = sorted(int(m.group(1)) for k in W if (m := re.fullmatch(r"patch_embed1\.conv\.(\d+)\.running_mean", k)))
    num_conv = len(bn) - 1
    assert num_conv >= 0 and bn == [1 + 3 * i for i in range(num_conv + 1)], bn
    embed_dims, depths, hidden, sr = [], [], [], []
    for s in range(1, NUM_STAGES + 1):
        embed_dims.append(W[f"patch_embed{s}.norm.weight"].shape[0])
        blocks = {int(m.group(1)) for k in W if (m := re.match(rf"block{s}\.(\d+)\.", k))}
        depths.append(len(blocks))
        assert blocks == set(range(len(blocks))), (s, blocks)
        hidden.append(W[f"block{s}.0.mlp.fc1.weight"].shape[0])
        sr.append(W[f"block{s}.0.attn.sr1.weight"].shape[-1] if f"block{s}.0.attn.sr1.weight" in W else 1)
    return dict(embed_dims=embed_dims, depths=depths, mlp_hidden=hidden, sr_ratios=sr, num_conv=num_conv,
                num_classes=W["head.weight"].shape[0], in_chans=W["patch_embed1.conv.0.weight"].shape[1],
                stem_width=W["patch_embed1.conv.0.weight"].shape[0])


def stage_grids(height, width, num_stages=NUM_STAGES):
    """Token grid (H, W) of each stage for an input of height x width pixels."""
    h = (height + 2 * 3 - 7) // 2 + 1  # 7x7 stride-2 conv, padding 3
    w = (width + 2 * 3 - 7) // 2 + 1
    h, w = h // 2, w // 2  # 2x2 stride-2 conv, no padding
    grids = [(h, w)]
    for _ in range(1, num_stages):
        h, w = (h + 2 - 3) // 2 + 1, (w + 2 - 3) // 2 + 1  # 3x3 stride-2 conv, padding 1
        grids.append((h, w))
    return grids


# ---------------------------------------------------------------------------
# Elementary layers
# ---------------------------------------------------------------------------

def layer_norm(x, w, b, eps):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)  # biased variance
    return (x - mean) / torch.sqrt(var + eps) * w + b


def linear(x, w, b):
    return x @ w.transpose(0, 1) + b


def gelu(x, tanh=False):
    if tanh:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def softmax(s):
    e = torch.exp(s - s.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


def conv2d(x, w, b, stride, padding, groups=1):
    return F.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)


def batch_norm(x, gamma, beta, mean, var, eps=BN_EPS):
    """Eval-mode BatchNorm2d on [B, C, H, W] with the running statistics."""
    shape = (1, -1, 1, 1)
    return (x - mean.view(shape)) / torch.sqrt(var.view(shape) + eps) * gamma.view(shape) + beta.view(shape)


def fold_batch_norm(conv_w, gamma, beta, mean, var, conv_b=None, eps=BN_EPS):
    """(weight, bias) of one convolution equal to conv (bias conv_b or none) followed by eval BatchNorm."""
    scale = gamma / torch.sqrt(var + eps)
    b = -mean if conv_b is None else conv_b - mean
    return conv_w * scale.view(-1, 1, 1, 1), beta + b * scale


def to_tokens(img):
    """[B, C, H, W] -> [B, H*W, C], token n = h*W + w."""
    B, C, H, Wd = img.shape
    return img.reshape(B, C, H * Wd).transpose(1, 2)


def to_image(tok, H, Wd):
    """[B, H*W, C] -> [B, C, H, W]."""
    B, N, C = tok.shape
    assert N == H * Wd, (N, H, Wd)
    return tok.transpose(1, 2).reshape(B, C, H, Wd)


def depthwise3x3(tok, H, Wd, w, b):
    """3x3 depthwise convolution, stride 1, padding 1, over the token grid of [B, N, C]."""
    C = tok.shape[-1]
    return to_tokens(conv2d(to_image(tok, H, Wd), w, b, 1, 1, groups=C))


def split_heads(t, heads):
    """[B, N, heads*d] -> [B, heads, N, d]: channel c = head*d + j."""
    B, N, C = t.shape
    return t.reshape(B, N, heads, C // heads).transpose(1, 2)


def merge_heads(t):
    """[B, heads, N, d] -> [B, N, heads*d]."""
    B, h, N, d = t.shape
    return t.transpose(1, 2).reshape(B, N, h * d)


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------

class _Ctx:
    def __init__(self, W, mutations):
        unknown = set(mutations) - MUTATIONS
        assert not unknown, unknown
        self.W = W
        self.m = frozenset(mutations)

    def eps(self, kind):
        if "ln_eps_all_1e-6" in self.m:
            return 1e-6
        if "ln_eps_all_1e-5" in self.m:
            return 1e-5
        return LN_EPS_DEFAULT if kind == "default" else LN_EPS_MODEL

    def ln(self, x, name, kind):
        return layer_norm(x, self.W[name + ".weight"], self.W[name + ".bias"], self.eps(kind))

    def lin(self, x, name):
        return linear(x, self.W[name + ".weight"], self.W[name + ".bias"])

    def gelu(self, x):
        return gelu(x, tanh="gelu_tanh" in self.m)

    def kv_split(self, kv, heads):
        """[B, M, 2*heads*d] -> (k, v) as [B, heads, M, d]; k is the first half of the channels."""
        half = kv.shape[-1] // 2
        k, v = kv[..., :half], kv[..., half:]
        if "v_before_k" in self.m:
            k, v = v, k
        return split_heads(k, heads), split_heads(v, heads)


def stem(ctx, x, num_conv):
    """patch_embed1 (Head): 7x7/2 conv, BN, ReLU, num_conv x (3x3 conv, BN, ReLU), 2x2/2 conv, LN."""
    W = ctx.W

    def conv_bn_relu(x, i, stride, padding):
        x = conv2d(x, W[f"patch_embed1.conv.{i}.weight"], None, stride, padding)
        if "no_batchnorm" not in ctx.m:
            p = f"patch_embed1.conv.{i + 1}."
            x = batch_norm(x, W[p + "weight"], W[p + "bias"], W[p + "running_mean"], W[p + "running_var"])
        return torch.clamp(x, min=0.0)

    x = conv_bn_relu(x, 0, 2, 3)
    for j in range(num_conv):
        x = conv_bn_relu(x, 3 + 3 * j, 1, 1)
    last = 3 + 3 * num_conv
    x = conv2d(x, W[f"patch_embed1.conv.{last}.weight"], W[f"patch_embed1.conv.{last}.bias"], 2, 0)
    H, Wd = x.shape[-2:]
    return ctx.ln(to_tokens(x), "patch_embed1.norm", "default"), H, Wd


def overlap_patch_embed(ctx, img, s):
    """patch_embed{s} for s >= 2: 3x3 stride-2 conv, padding 1, then LN."""
    W = ctx.W
    x = conv2d(img, W[f"patch_embed{s}.proj.weight"], W[f"patch_embed{s}.proj.bias"], 2, 1)
    H, Wd = x.shape[-2:]
    return ctx.ln(to_tokens(x), f"patch_embed{s}.norm", "default"), H, Wd


def attention(ctx, p, x, H, Wd, heads, sr):
    """Shunted self-attention of block prefix p (e.g. 'block1.0.attn') on [B, N, C]."""
    W = ctx.W
    B, N, C = x.shape
    d = C // heads
    scale = d ** -0.5
    q = split_heads(ctx.lin(x, p + ".q"), heads)  # [B, heads, N, d]
    if sr == 1:
        k, v = ctx.kv_split(ctx.lin(x, p + ".kv"), heads)  # [B, heads, N, d]
        lc = lambda t: depthwise3x3(t, H, Wd, W[p + ".local_conv.weight"], W[p + ".local_conv.bias"])  # noqa: E731
        if "local_conv_on_v_sr1" in ctx.m:
            v = split_heads(merge_heads(v) + lc(merge_heads(v)), heads)
            out = merge_heads(softmax(q @ k.transpose(-2, -1) * scale) @ v)
        else:
            out = merge_heads(softmax(q @ k.transpose(-2, -1) * scale) @ v) + lc(merge_heads(v))
        return ctx.lin(out, p + ".proj")

    img = to_image(x, H, Wd)
    g = heads // 2
    outs = []
    for i, r in ((1, sr), (2, sr // 2)):
        # Aggregated keys/values: conv with kernel = stride = r (r = 1: a 1x1 conv), LN, GELU.
        agg = conv2d(img, W[f"{p}.sr{i}.weight"], W[f"{p}.sr{i}.bias"], r, 0)
        h, w = agg.shape[-2:]
        agg = ctx.gelu(ctx.ln(to_tokens(agg), f"{p}.norm{i}", "default"))  # [B, h*w, C]
        k, v = ctx.kv_split(ctx.lin(agg, f"{p}.kv{i}"), g)  # [B, g, h*w, d]
        if "no_local_conv_sr" not in ctx.m:
            vt = merge_heads(v)
            v = split_heads(vt + depthwise3x3(vt, h, w, W[f"{p}.local_conv{i}.weight"], W[f"{p}.local_conv{i}.bias"]), g)
        group = i - 1 if "swap_head_groups" not in ctx.m else 2 - i
        qi = q[:, group * g:(group + 1) * g]  # heads 0..g-1 take the coarse keys, g..2g-1 the fine ones
        o = merge_heads(softmax(qi @ k.transpose(-2, -1) * scale) @ v)  # [B, N, C/2]
        outs.append(o)
    if "swap_head_groups" in ctx.m:
        outs = outs[::-1]
    return ctx.lin(torch.cat(outs, dim=-1), p + ".proj")


def mlp(ctx, p, x, H, Wd):
    """fc1 -> GELU(h + dwconv3x3(h)) -> fc2."""
    W = ctx.W
    h = ctx.lin(x, p + ".fc1")
    dw = depthwise3x3(h, H, Wd, W[p + ".dwconv.dwconv.weight"], W[p + ".dwconv.dwconv.bias"])
    h = ctx.gelu(dw if "mlp_dwconv_no_residual" in ctx.m else h + dw)
    return ctx.lin(h, p + ".fc2")


def forward(W, images, num_heads, mutations=()):
    """Logits [B, num_classes] and per-stage shapes and sums for images [B, 3, H, W].

    W: float64 tensors by the authors' names; num_heads: heads per stage.
    """
    ctx = _Ctx(W, mutations)
    arch = infer_architecture(W)
    assert len(num_heads) == NUM_STAGES
    stages = []
    x = images
    for s in range(1, NUM_STAGES + 1):
        C, heads, sr = arch["embed_dims"][s - 1], num_heads[s - 1], arch["sr_ratios"][s - 1]
        assert C % heads == 0 and (sr == 1 or heads % 2 == 0), (s, C, heads, sr)
        if s == 1:
            x, H, Wd = stem(ctx, x, arch["num_conv"])
        else:
            x, H, Wd = overlap_patch_embed(ctx, x, s)
        for j in range(arch["depths"][s - 1]):
            p = f"block{s}.{j}"
            x = x + attention(ctx, p + ".attn", ctx.ln(x, p + ".norm1", "model"), H, Wd, heads, sr)
            x = x + mlp(ctx, p + ".mlp", ctx.ln(x, p + ".norm2", "model"), H, Wd)
        x = ctx.ln(x, f"norm{s}", "model")
        keys = [H * Wd] if sr == 1 else [(H // sr) * (Wd // sr), (H // (sr // 2)) * (Wd // (sr // 2))]
        # Per-image sums of the stage output, to tell which stage a wrong result starts in.
        stages.append(dict(grid=[H, Wd], tokens=H * Wd, keyTokens=keys,
                           outputSum=x.sum(dim=(1, 2)).tolist(), outputAbsSum=x.abs().sum(dim=(1, 2)).tolist()))
        if s < NUM_STAGES:
            x = to_image(x, H, Wd)
    feat = x[:, -1] if "cls_last_token" in ctx.m else x.mean(dim=1)
    return dict(logits=ctx.lin(feat, "head"), stages=stages)


def count_macs(arch, height, width):
    """Multiply-accumulates of one image: convolutions, linear layers, q.k and attn.v.

    arch: infer_architecture()'s dict. Norms, activations, softmax, residual adds
    and the mean are not counted (BatchNorm is folded into its convolution).
    """
    C1, stem = arch["embed_dims"][0], arch["stem_width"]
    h, w = (height + 2 * 3 - 7) // 2 + 1, (width + 2 * 3 - 7) // 2 + 1
    macs = stem * arch["in_chans"] * 49 * h * w + arch["num_conv"] * stem * stem * 9 * h * w
    grids = stage_grids(height, width)
    macs += C1 * stem * 4 * grids[0][0] * grids[0][1]
    for s in range(NUM_STAGES):
        C, sr, hid = arch["embed_dims"][s], arch["sr_ratios"][s], arch["mlp_hidden"][s]
        H, Wd = grids[s]
        N = H * Wd
        if s > 0:
            macs += C * arch["embed_dims"][s - 1] * 9 * N
        per_block = N * C * C * 2  # q, proj
        if sr == 1:
            per_block += N * C * 2 * C + N * C * 9 + 2 * N * N * C  # kv, local_conv, q.k and attn.v
        else:
            for r in (sr, sr // 2):
                M = (H // r) * (Wd // r)
                per_block += M * C * C * r * r + M * C * C + M * (C // 2) * 9 + 2 * N * M * (C // 2)
        per_block += 2 * N * C * hid + N * hid * 9  # fc1, fc2, dwconv
        macs += arch["depths"][s] * per_block
    return macs + arch["embed_dims"][-1] * arch["num_classes"]
