"""Plain float64 reference of the EViT forward pass (SPEC.md section 1).

Written directly from the specification, independently of the runtime in
lib/, src/ and cuda/. It deliberately uses only elementary tensor operations
(matmul, softmax, erf, sort) so that every step can be checked against the
text of SPEC section 1. It does not use timm.

All computation is done in float64. Weights are expected as a dict of
float64 tensors with timm's names (see SPEC section 2).
"""

import math

import torch
import torch.nn.functional as F

LN_EPS = 1e-6
BASE_GRID = 14  # the checkpoint's position grid is 14x14 (224 px, patch 16)


# ---------------------------------------------------------------------------
# Schedule
# ---------------------------------------------------------------------------

def kept_count(n_minus_1, keep_rate):
    """k = ceil(keepRate * (N-1)) taken in float64 (Python floats are float64)."""
    return math.ceil(float(keep_rate) * float(n_minus_1))


def token_counts(num_patches, depth, keep_rate, drop_loc, fuse):
    """Tokens (class token excluded) after each dropping block, in block order.

    A block reduces only when k < N-1; otherwise the count is unchanged.
    """
    n = num_patches  # N - 1
    out = []
    drops = set(drop_loc)
    for i in range(depth):
        if i in drops:
            k = kept_count(n, keep_rate)
            if k < n:
                n = k + (1 if fuse else 0)
            out.append(n)
    return out


# ---------------------------------------------------------------------------
# Elementary layers
# ---------------------------------------------------------------------------

def layer_norm(x, w, b, eps=LN_EPS):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)  # biased variance
    return (x - mean) / torch.sqrt(var + eps) * w + b


def linear(x, w, b):
    return x @ w.transpose(0, 1) + b


def gelu_erf(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def patch_embed(images, w, b, patch):
    """Convolution with kernel = stride = patch, written as patch extraction
    plus a matrix product. Patch order is row-major over the grid."""
    bsz, cin, h, wd = images.shape
    gh, gw = h // patch, wd // patch
    x = images[:, :, : gh * patch, : gw * patch]
    x = x.reshape(bsz, cin, gh, patch, gw, patch)
    x = x.permute(0, 2, 4, 1, 3, 5)  # B, gh, gw, cin, ph, pw
    x = x.reshape(bsz, gh * gw, cin * patch * patch)
    wf = w.reshape(w.shape[0], -1)  # [C, cin*ph*pw], same (cin, ph, pw) order
    return x @ wf.transpose(0, 1) + b, gh, gw


def resize_pos_embed(pos_embed, new_grid, old_grid=None):
    """Resize [1, 1+P, C] position embeddings to a new grid.

    The class-token entry is kept unchanged; the patch grid is resized with
    bicubic interpolation (A = -0.75, half-pixel centres, clamped edges),
    i.e. F.interpolate(mode='bicubic', align_corners=False), in float64.
    """
    gh_new, gw_new = new_grid
    c = pos_embed.shape[-1]
    p = pos_embed.shape[1] - 1
    if old_grid is None:
        s = int(round(math.sqrt(p)))
        old_grid = (s, s)
    gh_old, gw_old = old_grid
    assert gh_old * gw_old == p
    if (gh_old, gw_old) == (gh_new, gw_new):
        return pos_embed.clone()
    cls = pos_embed[:, :1]
    grid = pos_embed[:, 1:].reshape(1, gh_old, gw_old, c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.to(torch.float64), size=(gh_new, gw_new),
                         mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, gh_new * gw_new, c)
    return torch.cat([cls.to(torch.float64), grid], dim=1)


# ---------------------------------------------------------------------------
# Forward pass
# ---------------------------------------------------------------------------

def pos_embed_has_cls_slot(pos):
    """True for timm/DeiT [1, 1+P, C]; False for DeiT III [1, P, C] (P square)."""
    p = pos.shape[1]
    s = int(round(math.sqrt(p)))
    return s * s != p


def layer_scale(weights, block, which, y):
    """DeiT III LayerScale: the branch output times a per-channel gamma.

    Checkpoint names: blocks.N.gamma_1 / gamma_2 (DeiT III) or
    blocks.N.ls1.gamma / ls2.gamma (timm). Without either, y is unchanged.
    """
    for name in (f"blocks.{block}.gamma_{which}", f"blocks.{block}.ls{which}.gamma"):
        if name in weights:
            return weights[name] * y
    return y


def attention(x, qkv_w, qkv_b, num_heads):
    """Multi-head self-attention core. Returns (per-head output concatenated
    [B, N, C], attention probabilities [B, H, N, N])."""
    bsz, n, c = x.shape
    hd = c // num_heads
    qkv = linear(x, qkv_w, qkv_b)  # [B, N, 3C]; layout (3, heads, head_dim)
    qkv = qkv.reshape(bsz, n, 3, num_heads, hd).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]  # [B, H, N, hd]
    logits = (q @ k.transpose(-2, -1)) * (hd ** -0.5)
    probs = torch.softmax(logits, dim=-1)
    out = (probs @ v).transpose(1, 2).reshape(bsz, n, c)
    return out, probs


def forward(weights, images, *, keep_rate, drop_loc, fuse, num_heads,
            patch_size=16, depth=None, stats=None):
    """Run the EViT forward pass of SPEC section 1 in float64.

    Returns a dict with:
      logits      [B, num_classes] float64 tensor
      kept        list of {"block": i, "tokens": [[origins per image], ...]}
                  for every block where a reduction happened; origins are
                  patch indices 0..P-1, or -1-L for a token fused at block L;
                  the class token is excluded, the fused token (if any) last
      token_counts  tokens (excluding cls) after each dropping block
      min_relative_gap  smallest (s_k - s_{k+1}) / s_k over images and
                  reducing blocks (k-th and (k+1)-th largest scores), or None
      gaps        list of per-block, per-image relative gaps
    If `stats` is a list, per-block residual-stream std / max |x| are
    appended to it.
    """
    W = weights
    dt = torch.float64
    images = images.to(dt)
    if depth is None:
        depth = 0
        while f"blocks.{depth}.norm1.weight" in W:
            depth += 1

    x, gh, gw = patch_embed(images, W["patch_embed.proj.weight"],
                            W["patch_embed.proj.bias"], patch_size)
    bsz, num_patches, c = x.shape
    pos = W["pos_embed"]
    cls = W["cls_token"].expand(bsz, 1, c)
    if pos_embed_has_cls_slot(pos):
        if pos.shape[1] - 1 != num_patches:
            pos = resize_pos_embed(pos, (gh, gw))
        x = torch.cat([cls, x], dim=1) + pos
    else:
        # DeiT III: P rows, added to the patches before the class token is
        # prepended; the class token gets no position embedding.
        if pos.shape[1] != num_patches:
            padded = torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)
            pos = resize_pos_embed(padded, (gh, gw))[:, 1:]
        x = torch.cat([cls, x + pos], dim=1)

    origins = torch.arange(num_patches, dtype=torch.int64).unsqueeze(0)
    origins = origins.expand(bsz, num_patches).clone()  # [B, N-1]

    drops = set(drop_loc)
    kept_records = []
    counts = []
    gaps = []

    for i in range(depth):
        p = f"blocks.{i}."
        h = layer_norm(x, W[p + "norm1.weight"], W[p + "norm1.bias"])
        a, probs = attention(h, W[p + "attn.qkv.weight"], W[p + "attn.qkv.bias"],
                             num_heads)
        x = x + layer_scale(W, i, 1,
                            linear(a, W[p + "attn.proj.weight"], W[p + "attn.proj.bias"]))

        if i in drops:
            n1 = x.shape[1] - 1
            k = kept_count(n1, keep_rate)
            if k < n1:
                # class-token row, own column removed, mean over heads,
                # not renormalised
                s = probs[:, :, 0, 1:].mean(dim=1)  # [B, N-1]
                # descending by score; ties to the lower index (stable sort)
                order = torch.sort(s, dim=1, descending=True, stable=True).indices
                idx = order[:, :k]
                rest = order[:, k:]
                sorted_s = torch.gather(s, 1, order)
                gap = ((sorted_s[:, k - 1] - sorted_s[:, k]) / sorted_s[:, k - 1])
                gaps.append({"block": i, "gaps": gap.tolist()})

                tokens = x[:, 1:]
                kept = torch.gather(tokens, 1, idx.unsqueeze(-1).expand(-1, -1, c))
                kept_orig = torch.gather(origins, 1, idx)
                parts = [x[:, :1], kept]
                orig_parts = [kept_orig]
                if fuse:
                    rest_tok = torch.gather(tokens, 1,
                                            rest.unsqueeze(-1).expand(-1, -1, c))
                    rest_s = torch.gather(s, 1, rest)
                    fused = (rest_s.unsqueeze(-1) * rest_tok).sum(dim=1, keepdim=True)
                    parts.append(fused)
                    orig_parts.append(torch.full((bsz, 1), -1 - i, dtype=torch.int64))
                x = torch.cat(parts, dim=1)
                origins = torch.cat(orig_parts, dim=1)
                kept_records.append({"block": i, "tokens": origins.tolist()})
            counts.append(x.shape[1] - 1)

        h = layer_norm(x, W[p + "norm2.weight"], W[p + "norm2.bias"])
        h = gelu_erf(linear(h, W[p + "mlp.fc1.weight"], W[p + "mlp.fc1.bias"]))
        x = x + layer_scale(W, i, 2,
                            linear(h, W[p + "mlp.fc2.weight"], W[p + "mlp.fc2.bias"]))
        if stats is not None:
            stats.append({"block": i, "std": float(x.std()),
                          "maxabs": float(x.abs().max())})

    x = layer_norm(x, W["norm.weight"], W["norm.bias"])
    logits = linear(x[:, 0], W["head.weight"], W["head.bias"])

    all_gaps = [g for rec in gaps for g in rec["gaps"]]
    return {
        "logits": logits,
        "kept": kept_records,
        "token_counts": counts,
        "gaps": gaps,
        "min_relative_gap": min(all_gaps) if all_gaps else None,
    }
