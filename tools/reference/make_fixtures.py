"""Generate the tiny EViT checkpoint and golden outputs in test/fixtures/.

Run from anywhere:

    /usr/bin/python3 tools/reference/make_fixtures.py

Everything is deterministic (fixed seeds, numpy PCG64). Weights are random
float32; the reference evaluates them exactly, promoted to float64.
"""

import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import evit_reference as ref  # noqa: E402
from safetensors_io import read_safetensors, write_safetensors  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "test", "fixtures")

# Model hyper-parameters
PATCH = 16
IMG = 224
IN_CH = 3
DIM = 48
DEPTH = 12
HEADS = 3
HIDDEN = 192
CLASSES = 10
GRID = IMG // PATCH  # 14
P = GRID * GRID  # 196

DROP_LOC = [3, 6, 9]
MIN_GAP = 1e-3  # required relative gap between k-th and (k+1)-th scores
FIRST_WEIGHT_SEED = 20240601
INPUT_SEED = 7
MAX_SEED_TRIES = 200

CASES = [
    {"name": "dense", "input": "input-224.npy", "imgSize": 224,
     "keepRate": 1.0, "fuse": True},
    {"name": "keep0.7-fused", "input": "input-224.npy", "imgSize": 224,
     "keepRate": 0.7, "fuse": True},
    {"name": "keep0.7-nofuse", "input": "input-224.npy", "imgSize": 224,
     "keepRate": 0.7, "fuse": False},
    {"name": "keep0.5-fused", "input": "input-224.npy", "imgSize": 224,
     "keepRate": 0.5, "fuse": True},
    {"name": "keep0.7-fused-256", "input": "input-256.npy", "imgSize": 256,
     "keepRate": 0.7, "fuse": True},
]

# SPEC section 1 table: tokens after blocks 3 / 6 / 9 at 224 px.
SPEC_TABLE = {
    (0.9, True): [178, 162, 147], (0.9, False): [177, 160, 144],
    (0.7, True): [139, 99, 71], (0.7, False): [138, 97, 68],
    (0.5, True): [99, 51, 27], (0.5, False): [98, 49, 25],
}


# ---------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------

def make_weights(seed):
    """Random float32 weights in timm layout, in timm's tensor order."""
    rng = np.random.default_rng(seed)

    def n(shape, std, mean=0.0):
        a = rng.standard_normal(size=shape) * std + mean
        return a.astype(np.float32)

    W = {}
    W["cls_token"] = n((1, 1, DIM), 0.5)
    # Smooth 2-D structure (so the bicubic resize is meaningful) plus noise.
    yy, xx = np.meshgrid(np.arange(GRID), np.arange(GRID), indexing="ij")
    freqs = rng.uniform(0.1, 0.8, size=(DIM, 2))
    phases = rng.uniform(0, 2 * math.pi, size=DIM)
    smooth = np.sin(freqs[:, 0, None, None] * yy[None] +
                    freqs[:, 1, None, None] * xx[None] + phases[:, None, None])
    smooth = smooth.reshape(DIM, P).T  # [P, DIM]
    pos = np.zeros((1, 1 + P, DIM))
    pos[0, 0] = rng.standard_normal(DIM) * 0.3
    pos[0, 1:] = 0.6 * smooth + 0.2 * rng.standard_normal((P, DIM))
    W["pos_embed"] = pos.astype(np.float32)
    fan_in = IN_CH * PATCH * PATCH
    W["patch_embed.proj.weight"] = n((DIM, IN_CH, PATCH, PATCH), 1.0 / math.sqrt(fan_in))
    W["patch_embed.proj.bias"] = n((DIM,), 0.1)
    for i in range(DEPTH):
        p = f"blocks.{i}."
        W[p + "norm1.weight"] = n((DIM,), 0.25, 1.0)
        W[p + "norm1.bias"] = n((DIM,), 0.1)
        # q and k rows scaled up so the class-token attention is peaked
        # (clearly non-uniform); v rows at unit-gain scale.
        qk = n((2 * DIM, DIM), 0.18)
        v = n((DIM, DIM), 1.0 / math.sqrt(DIM))
        W[p + "attn.qkv.weight"] = np.concatenate([qk, v], axis=0)
        W[p + "attn.qkv.bias"] = n((3 * DIM,), 0.2)
        W[p + "attn.proj.weight"] = n((DIM, DIM), 0.5 / math.sqrt(DIM))
        W[p + "attn.proj.bias"] = n((DIM,), 0.05)
        W[p + "norm2.weight"] = n((DIM,), 0.25, 1.0)
        W[p + "norm2.bias"] = n((DIM,), 0.1)
        W[p + "mlp.fc1.weight"] = n((HIDDEN, DIM), 1.0 / math.sqrt(DIM))
        W[p + "mlp.fc1.bias"] = n((HIDDEN,), 0.1)
        W[p + "mlp.fc2.weight"] = n((DIM, HIDDEN), 0.5 / math.sqrt(HIDDEN))
        W[p + "mlp.fc2.bias"] = n((DIM,), 0.05)
    W["norm.weight"] = n((DIM,), 0.25, 1.0)
    W["norm.bias"] = n((DIM,), 0.1)
    W["head.weight"] = n((CLASSES, DIM), 0.4)
    W["head.bias"] = n((CLASSES,), 0.2)
    for a in W.values():
        assert a.dtype == np.float32
    return W


def check_shapes(W):
    expect = {
        "cls_token": [1, 1, DIM], "pos_embed": [1, 1 + P, DIM],
        "patch_embed.proj.weight": [DIM, IN_CH, PATCH, PATCH],
        "patch_embed.proj.bias": [DIM],
        "norm.weight": [DIM], "norm.bias": [DIM],
        "head.weight": [CLASSES, DIM], "head.bias": [CLASSES],
    }
    for i in range(DEPTH):
        p = f"blocks.{i}."
        expect.update({
            p + "norm1.weight": [DIM], p + "norm1.bias": [DIM],
            p + "attn.qkv.weight": [3 * DIM, DIM], p + "attn.qkv.bias": [3 * DIM],
            p + "attn.proj.weight": [DIM, DIM], p + "attn.proj.bias": [DIM],
            p + "norm2.weight": [DIM], p + "norm2.bias": [DIM],
            p + "mlp.fc1.weight": [HIDDEN, DIM], p + "mlp.fc1.bias": [HIDDEN],
            p + "mlp.fc2.weight": [DIM, HIDDEN], p + "mlp.fc2.bias": [DIM],
        })
    assert set(expect) == set(W), set(expect) ^ set(W)
    for k, s in expect.items():
        assert list(W[k].shape) == s, (k, W[k].shape, s)


def to_f64(W):
    return {k: torch.from_numpy(v.astype(np.float64)) for k, v in W.items()}



# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------

def make_inputs():
    rng = np.random.default_rng(INPUT_SEED)

    def structure(size, kind):
        yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size),
                             indexing="ij")
        if kind == 0:  # diagonal gradient, different per channel
            base = np.stack([1.5 * xx, 1.5 * yy, xx + yy])
        elif kind == 1:  # bright blob plus horizontal stripes
            blob = 2.5 * np.exp(-((xx - 0.3) ** 2 + (yy + 0.2) ** 2) / 0.08)
            base = np.stack([blob, blob * 0.5 + np.sin(8 * yy),
                             -blob + np.cos(5 * xx)])
        else:  # rings plus a dark quadrant
            r = np.sqrt(xx ** 2 + yy ** 2)
            ring = 1.5 * np.sin(10 * r)
            quad = np.where((xx > 0) & (yy < 0), -2.0, 0.0)
            base = np.stack([ring + quad, ring, quad])
        return base

    x224 = np.empty((2, 3, 224, 224), dtype=np.float32)
    for b in range(2):
        x224[b] = (rng.standard_normal((3, 224, 224)) + structure(224, b)).astype(np.float32)
    x256 = (rng.standard_normal((1, 3, 256, 256)) +
            structure(256, 2)[None]).astype(np.float32)
    return x224, x256


# ---------------------------------------------------------------------------
# Independent cross-checks of the elementary reference layers
# ---------------------------------------------------------------------------

def self_check(Wt, x):
    xt = torch.from_numpy(x.astype(np.float64))
    pe, _, _ = ref.patch_embed(xt, Wt["patch_embed.proj.weight"],
                               Wt["patch_embed.proj.bias"], PATCH)
    conv = F.conv2d(xt, Wt["patch_embed.proj.weight"], Wt["patch_embed.proj.bias"],
                    stride=PATCH).flatten(2).transpose(1, 2)
    assert torch.allclose(pe, conv, rtol=0, atol=1e-10), "patch embed"
    h = torch.randn(2, 5, DIM, dtype=torch.float64)
    ln = ref.layer_norm(h, Wt["norm.weight"], Wt["norm.bias"])
    ln2 = F.layer_norm(h, (DIM,), Wt["norm.weight"], Wt["norm.bias"], eps=1e-6)
    assert torch.allclose(ln, ln2, rtol=0, atol=1e-12), "layer norm"
    assert torch.allclose(ref.gelu_erf(h), F.gelu(h), rtol=0, atol=1e-14), "gelu"


# ---------------------------------------------------------------------------
# Golden evaluation
# ---------------------------------------------------------------------------

def evaluate(Wt, inputs, verbose=False):
    results = []
    for case in CASES:
        x = torch.from_numpy(inputs[case["input"]].astype(np.float64))
        stats = []
        r = ref.forward(Wt, x, keep_rate=case["keepRate"], drop_loc=DROP_LOC,
                        fuse=case["fuse"], num_heads=HEADS, patch_size=PATCH,
                        stats=stats)
        grid = case["imgSize"] // PATCH
        expect_counts = ref.token_counts(grid * grid, DEPTH, case["keepRate"],
                                         DROP_LOC, case["fuse"])
        assert r["token_counts"] == expect_counts, (case["name"], r["token_counts"])
        if verbose:
            mx = max(s["maxabs"] for s in stats)
            sd = max(s["std"] for s in stats)
            lg = r["logits"]
            print(f"  {case['name']:18s} counts={r['token_counts']} "
                  f"minGap={r['min_relative_gap']} "
                  f"|logits| in [{lg.abs().min():.3g}, {lg.abs().max():.3g}] "
                  f"residual max|x|={mx:.3g} max std={sd:.3g}")
        results.append((case, r, stats))
    return results


def min_gap(results):
    gaps = [r["min_relative_gap"] for _, r, _ in results
            if r["min_relative_gap"] is not None]
    return min(gaps)


# ---------------------------------------------------------------------------
# Position-embedding resize fixture
# ---------------------------------------------------------------------------

def make_posembed_fixture():
    rng = np.random.default_rng(99)
    specs = [((4, 4), (7, 7), 5), ((4, 4), (3, 3), 5), ((4, 4), (5, 8), 3),
             ((14, 14), (16, 16), 2), ((14, 14), (12, 12), 2)]
    cases = []
    for (fh, fw), (th, tw), c in specs:
        a = rng.standard_normal((1, 1 + fh * fw, c)).astype(np.float32)
        out = ref.resize_pos_embed(torch.from_numpy(a.astype(np.float64)),
                                   (th, tw), (fh, fw))
        assert out.shape == (1, 1 + th * tw, c)
        assert torch.equal(out[0, 0], torch.from_numpy(a[0, 0].astype(np.float64)))
        cases.append({
            "from": [fh, fw], "to": [th, tw], "channels": c,
            "input": [float(v) for v in a.reshape(-1)],
            "output": [float(v) for v in out.reshape(-1).tolist()],
        })
    return {
        "description": "pos_embed [1, 1+P, C] resized from grid 'from' to grid "
                       "'to' (bicubic, A=-0.75, half-pixel centres, clamped "
                       "edges, align_corners=False), float64; class-token "
                       "entry (first C values) unchanged. Arrays are flat, "
                       "row-major [token][channel], token 0 = class token, "
                       "then patches row-major over the grid.",
        "cases": cases,
    }


# ---------------------------------------------------------------------------

def main():
    os.makedirs(OUT, exist_ok=True)

    # Schedule against the SPEC table.
    for (kr, fuse), want in SPEC_TABLE.items():
        got = ref.token_counts(P, DEPTH, kr, DROP_LOC, fuse)
        assert got == want, (kr, fuse, got, want)
    print("token counts match SPEC section 1 table")

    x224, x256 = make_inputs()
    inputs = {"input-224.npy": x224, "input-256.npy": x256}

    chosen = None
    for t in range(MAX_SEED_TRIES):
        seed = FIRST_WEIGHT_SEED + t
        W = make_weights(seed)
        Wt = to_f64(W)
        results = evaluate(Wt, inputs)
        g = min_gap(results)
        print(f"weight seed {seed}: min relative gap {g:.3e}")
        if g >= MIN_GAP:
            chosen = (seed, W, Wt, results)
            break
    assert chosen is not None, "no seed gave a large enough score gap"
    seed, W, Wt, _ = chosen
    check_shapes(W)
    self_check(Wt, x224)

    # Write checkpoint and inputs, then re-evaluate from the files on disk.
    st_path = os.path.join(OUT, "tiny-evit.safetensors")
    write_safetensors(st_path, W, metadata={"format": "pt"})
    W_disk = read_safetensors(st_path)
    for k in W:
        assert np.array_equal(W[k], W_disk[k]), k
    for name, arr in inputs.items():
        np.save(os.path.join(OUT, name), arr)
        back = np.load(os.path.join(OUT, name))
        assert back.dtype == np.float32 and np.array_equal(back, arr)
    Wt = to_f64(W_disk)
    inputs = {name: np.load(os.path.join(OUT, name)) for name in inputs}

    print(f"using weight seed {seed}")
    results = evaluate(Wt, inputs, verbose=True)
    assert min_gap(results) >= MIN_GAP

    cases_json = []
    all_logits = []
    for case, r, stats in results:
        logits = r["logits"]
        all_logits.append(logits)
        assert torch.isfinite(logits).all()
        for s in stats:
            assert math.isfinite(s["maxabs"]) and s["maxabs"] < 100, (case["name"], s)
        if case["imgSize"] == 224:
            if case["keepRate"] >= 1.0:
                assert r["token_counts"] == [P] * len(DROP_LOC) and r["kept"] == []
            else:
                assert r["token_counts"] == SPEC_TABLE[(case["keepRate"], case["fuse"])]
        # kept lists: lengths follow the counts; origins are valid
        for rec, n in zip(r["kept"], r["token_counts"]):
            for toks in rec["tokens"]:
                assert len(toks) == n
                assert len(set(toks)) == len(toks)
                if case["fuse"]:
                    assert toks[-1] == -1 - rec["block"]
        cases_json.append({
            "name": case["name"],
            "input": case["input"],
            "imgSize": case["imgSize"],
            "keepRate": case["keepRate"],
            "dropLoc": list(DROP_LOC),
            "fuse": case["fuse"],
            "tokenCounts": r["token_counts"],
            "logits": [[float(v) for v in row] for row in logits.tolist()],
            "kept": r["kept"],
            "minRelativeGap": r["min_relative_gap"],
        })

    allv = torch.cat([l.reshape(-1) for l in all_logits]).abs()
    print(f"|logits| range over all cases: [{allv.min():.4g}, {allv.max():.4g}]")
    assert allv.max() < 20.0 and allv.max() > 1.0, "logits out of the intended range"

    # The fused and not-fused 0.7 cases must agree at block 3 (same input
    # to the first reduction); later blocks may differ.
    byname = {c["name"]: c for c in cases_json}
    a = byname["keep0.7-fused"]["kept"][0]["tokens"]
    b = byname["keep0.7-nofuse"]["kept"][0]["tokens"]
    assert [t[:-1] for t in a] == b

    golden = {
        "model": {"file": "tiny-evit.safetensors", "embedDim": DIM, "depth": DEPTH,
                  "numHeads": HEADS, "patchSize": PATCH, "numClasses": CLASSES,
                  "imgSize": IMG},
        "cases": cases_json,
    }
    with open(os.path.join(OUT, "golden.json"), "w") as f:
        json.dump(golden, f, separators=(",", ":"))
        f.write("\n")

    with open(os.path.join(OUT, "posembed-resize.json"), "w") as f:
        json.dump(make_posembed_fixture(), f, separators=(",", ":"))
        f.write("\n")

    for name in ["tiny-evit.safetensors", "input-224.npy", "input-256.npy",
                 "golden.json", "posembed-resize.json"]:
        print(f"  {name}: {os.path.getsize(os.path.join(OUT, name))} bytes")


if __name__ == "__main__":
    main()
