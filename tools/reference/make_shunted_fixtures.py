"""Generate the Shunted Transformer fixtures in test/fixtures/shunted/.

Run with the Python that has torch (Debian's python3-torch):

    /usr/bin/python3 tools/reference/make_shunted_fixtures.py

Two small random-weight models with the authors' structure and tensor names
(SSA.py): the 64-channel stem, four stages, two-group shunted attention where
sr > 1 and the single kv/local_conv path where sr = 1. Everything is
deterministic (numpy PCG64 seeds; torch.save writes no timestamps), so running
the script again reproduces byte-identical files.

The goldens are float64 logits of shunted_reference.py on the float32 weights
and inputs. The script also evaluates deliberate departures from the model
(shunted_reference.MUTATIONS) and asserts that each moves the logits by far
more than the 1e-4 parity tolerance, so a test cannot pass by accident.
"""

import argparse
import collections
import hashlib
import json
import math
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import shunted_reference as ref  # noqa: E402
from safetensors_io import read_safetensors, write_safetensors  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
FIXTURES = os.path.join(ROOT, "test", "fixtures")
OUT = os.path.join(FIXTURES, "shunted")

STEM = 64  # SSA.py's Head is 64 channels wide whatever embed_dims says
IN_CH = 3
TOLERANCE = 1e-4  # CPU logits, absolute (SPEC.md section 4)
# Every departure in shunted_reference.MUTATIONS must move the logits of every
# case by more than the tolerance, and of some case by more than ten times it.
MIN_EFFECT_EVERY_CASE = 1.5 * TOLERANCE
MIN_EFFECT_SOME_CASE = 10 * TOLERANCE
# Wide GELU inputs and a strong MLP branch, so an approximate GELU shows.
FC1_STD, FC2_STD, HEAD_STD = 2.5, 0.1, 3.0

MODELS = [
    # The released layout (sr 8/4/2/1) with num_conv 0, small widths. Only as a
    # training checkpoint the way the authors' main.py writes it (state dict
    # under "model"): its stage-1 sr1 conv alone (64 x 64 x 8 x 8) is 1 MB.
    dict(name="shunted-c0", seed=20250601, embed_dims=[64, 16, 24, 16], depths=[1, 1, 1, 2],
         num_heads=[2, 4, 6, 2], mlp_ratios=[1, 4, 2, 3], sr_ratios=[8, 4, 2, 1], num_conv=0,
         num_classes=10, files=["pth-model"]),
    # num_conv 2 (the stem's loop twice), other sr ratios per stage (stage 1 with
    # sr 2: 1x1 sr2), one head per group in stage 2, a single head in stage 4
    # and a fractional MLP ratio (32 * 1.5 = 48). As safetensors and as a bare
    # state dict saved with torch.save: the same tensors in both formats.
    dict(name="shunted-c2", seed=20250602, embed_dims=[64, 32, 16, 32], depths=[1, 1, 2, 1],
         num_heads=[4, 2, 4, 1], mlp_ratios=[1, 1.5, 4, 2], sr_ratios=[2, 4, 2, 1], num_conv=2,
         num_classes=10, files=["safetensors", "pth-bare"]),
]

# Inputs shared with the DeiT/EViT fixtures (tools/reference/make_fixtures.py),
# checked by hash so a change there cannot silently invalidate these goldens.
SHARED_INPUTS = {
    "input-224.npy": "../input-224.npy",
    "input-256.npy": "../input-256.npy",
}
SMALL_INPUT = "input-64.npy"  # written here: the cheapest valid size for quick and emulated runs
SMALL_SIZE = 64
INPUT_SEED = 17


def make_weights(cfg):
    """float32 tensors in the authors' state-dict order (BatchNorm counters excluded)."""
    rng = np.random.default_rng(cfg["seed"])

    def n(shape, std, mean=0.0):
        return (rng.standard_normal(size=shape) * std + mean).astype(np.float32)

    def u(shape, lo, hi):
        return rng.uniform(lo, hi, size=shape).astype(np.float32)

    W = collections.OrderedDict()

    def ln(name, c, scale=1.0):
        W[name + ".weight"] = n((c,), 0.25 * scale, scale)
        W[name + ".bias"] = n((c,), 0.1 * scale)

    def bn(name, c):
        W[name + ".weight"] = u((c,), 0.5, 1.5)
        W[name + ".bias"] = n((c,), 0.2)
        W[name + ".running_mean"] = n((c,), 0.3)
        W[name + ".running_var"] = u((c,), 0.3, 2.0)

    # Stem. Its last conv and every conv ahead of an eps-1e-5 LayerNorm is
    # scaled down so that the LayerNorm sees a variance near 1e-4, where eps
    # 1e-5 and 1e-6 give clearly different results.
    W["patch_embed1.conv.0.weight"] = n((STEM, IN_CH, 7, 7), 1.0 / math.sqrt(IN_CH * 49))
    bn("patch_embed1.conv.1", STEM)
    for j in range(cfg["num_conv"]):
        W[f"patch_embed1.conv.{3 + 3 * j}.weight"] = n((STEM, STEM, 3, 3), 1.2 / math.sqrt(STEM * 9))
        bn(f"patch_embed1.conv.{4 + 3 * j}", STEM)
    last = 3 + 3 * cfg["num_conv"]
    W[f"patch_embed1.conv.{last}.weight"] = n((STEM, STEM, 2, 2), 0.01 / math.sqrt(STEM * 4))
    W[f"patch_embed1.conv.{last}.bias"] = n((STEM,), 0.005)
    ln("patch_embed1.norm", STEM, 0.03)  # a small residual stream: eps 1e-6 matters in the blocks too

    for s in range(1, 5):
        C = cfg["embed_dims"][s - 1]
        sr = cfg["sr_ratios"][s - 1]
        hidden = int(C * cfg["mlp_ratios"][s - 1])
        if s > 1:
            Cp = cfg["embed_dims"][s - 2]
            W[f"patch_embed{s}.proj.weight"] = n((C, Cp, 3, 3), 0.01 / math.sqrt(Cp * 9))
            W[f"patch_embed{s}.proj.bias"] = n((C,), 0.005)
            ln(f"patch_embed{s}.norm", C, 0.03)
        for j in range(cfg["depths"][s - 1]):
            p = f"block{s}.{j}."
            ln(p + "norm1", C)
            # Large q/k weights: peaked attention, so the key order and grouping matter.
            W[p + "attn.q.weight"] = n((C, C), 1.5 / math.sqrt(C))
            W[p + "attn.q.bias"] = n((C,), 0.1)
            W[p + "attn.proj.weight"] = n((C, C), 0.03 / math.sqrt(C))
            W[p + "attn.proj.bias"] = n((C,), 0.003)
            if sr > 1:
                for i, r in ((1, sr), (2, sr // 2)):
                    W[p + f"attn.sr{i}.weight"] = n((C, C, r, r), 0.01 / math.sqrt(C * r * r))
                    W[p + f"attn.sr{i}.bias"] = n((C,), 0.005)
                    ln(p + f"attn.norm{i}", C)
                for i in (1, 2):
                    W[p + f"attn.kv{i}.weight"] = np.concatenate(
                        [n((C // 2, C), 1.5 / math.sqrt(C)), n((C // 2, C), 1.0 / math.sqrt(C))])
                    W[p + f"attn.kv{i}.bias"] = n((C,), 0.1)
                for i in (1, 2):
                    W[p + f"attn.local_conv{i}.weight"] = n((C // 2, 1, 3, 3), 0.5 / 3)
                    W[p + f"attn.local_conv{i}.bias"] = n((C // 2,), 0.1)
            else:
                W[p + "attn.kv.weight"] = np.concatenate([n((C, C), 1.5 / math.sqrt(C)), n((C, C), 1.0 / math.sqrt(C))])
                W[p + "attn.kv.bias"] = n((2 * C,), 0.1)
                W[p + "attn.local_conv.weight"] = n((C, 1, 3, 3), 0.5 / 3)
                W[p + "attn.local_conv.bias"] = n((C,), 0.1)
            ln(p + "norm2", C)
            W[p + "mlp.fc1.weight"] = n((hidden, C), FC1_STD / math.sqrt(C))
            W[p + "mlp.fc1.bias"] = n((hidden,), 0.1)
            W[p + "mlp.dwconv.dwconv.weight"] = n((hidden, 1, 3, 3), 0.7 / 3)
            W[p + "mlp.dwconv.dwconv.bias"] = n((hidden,), 0.1)
            W[p + "mlp.fc2.weight"] = n((C, hidden), FC2_STD / math.sqrt(hidden))
            W[p + "mlp.fc2.bias"] = n((C,), 0.003)
        ln(f"norm{s}", C)
    C4 = cfg["embed_dims"][3]
    W["head.weight"] = n((cfg["num_classes"], C4), HEAD_STD / math.sqrt(C4))
    W["head.bias"] = n((cfg["num_classes"],), 0.1)
    return W


def state_dict(W):
    """An OrderedDict like nn.Module.state_dict(): _metadata, and an int64
    num_batches_tracked after each BatchNorm's running_var."""
    m = torch.nn.Module()
    sd = collections.OrderedDict()
    sd._metadata = m.state_dict()._metadata
    for k, v in W.items():
        sd[k] = torch.from_numpy(v.copy())
        if k.endswith(".running_var"):
            sd[k[: -len("running_var")] + "num_batches_tracked"] = torch.tensor(1000, dtype=torch.int64)
    return sd


def make_small_input():
    rng = np.random.default_rng(INPUT_SEED)
    yy, xx = np.meshgrid(np.linspace(-1, 1, SMALL_SIZE), np.linspace(-1, 1, SMALL_SIZE), indexing="ij")
    x = rng.standard_normal((2, IN_CH, SMALL_SIZE, SMALL_SIZE))
    x[0] += np.stack([2 * xx, 2 * yy, xx * yy])
    x[1] += 2.5 * np.exp(-((xx - 0.3) ** 2 + (yy + 0.2) ** 2) / 0.1)[None]
    return x.astype(np.float32)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def f64(W):
    return {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in W.items()}


def arch_record(cfg, W):
    inferred = ref.infer_architecture(W)
    hidden = [int(c * r) for c, r in zip(cfg["embed_dims"], cfg["mlp_ratios"])]
    assert inferred == dict(embed_dims=cfg["embed_dims"], depths=cfg["depths"], mlp_hidden=hidden,
                            sr_ratios=cfg["sr_ratios"], num_conv=cfg["num_conv"], num_classes=cfg["num_classes"],
                            in_chans=IN_CH, stem_width=STEM), inferred
    return {"embedDims": cfg["embed_dims"], "depths": cfg["depths"], "numHeads": cfg["num_heads"],
            "mlpHidden": hidden, "mlpRatios": cfg["mlp_ratios"], "srRatios": cfg["sr_ratios"],
            "numConv": cfg["num_conv"], "numClasses": cfg["num_classes"], "inChans": IN_CH, "stemWidth": STEM,
            "headDims": [c // h for c, h in zip(cfg["embed_dims"], cfg["num_heads"])]}


def check_elementary_layers():
    """The reference's LayerNorm, GELU, BatchNorm and its folding against torch's own."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 7, dtype=torch.float64, generator=g) * 0.01
    w, b = torch.randn(7, dtype=torch.float64, generator=g), torch.randn(7, dtype=torch.float64, generator=g)
    for eps in (1e-5, 1e-6):
        assert (ref.layer_norm(x, w, b, eps) - torch.nn.functional.layer_norm(x, (7,), w, b, eps)).abs().max() < 1e-12
    assert (ref.gelu(x * 300) - torch.nn.functional.gelu(x * 300)).abs().max() < 1e-12
    img = torch.randn(2, 4, 6, 5, dtype=torch.float64, generator=g)
    cw = torch.randn(3, 4, 3, 3, dtype=torch.float64, generator=g)
    gamma, beta = torch.rand(3, dtype=torch.float64, generator=g) + 0.5, torch.randn(3, dtype=torch.float64, generator=g)
    mean, var = torch.randn(3, dtype=torch.float64, generator=g), torch.rand(3, dtype=torch.float64, generator=g) + 0.3
    lit = ref.batch_norm(ref.conv2d(img, cw, None, 1, 1), gamma, beta, mean, var)
    tbn = torch.nn.functional.batch_norm(ref.conv2d(img, cw, None, 1, 1), mean, var, gamma, beta, False, 0.0, ref.BN_EPS)
    fw, fb = ref.fold_batch_norm(cw, gamma, beta, mean, var)
    assert (lit - tbn).abs().max() < 1e-12 and (lit - ref.conv2d(img, fw, fb, 1, 1)).abs().max() < 1e-12


def main():
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    check_elementary_layers()
    os.makedirs(OUT, exist_ok=True)
    np.save(os.path.join(OUT, SMALL_INPUT), make_small_input())
    inputs = {}
    for name, rel in [*SHARED_INPUTS.items(), (SMALL_INPUT, SMALL_INPUT)]:
        path = os.path.normpath(os.path.join(OUT, rel))
        x = np.load(path)
        assert x.dtype == np.float32 and x.ndim == 4 and x.shape[1] == IN_CH, (path, x.shape)
        inputs[name] = dict(file=rel, sha256=sha256(path), shape=list(x.shape),
                            tensor=torch.from_numpy(x.astype(np.float64)))

    golden = {
        "tolerance": {"cpuLogitsAbs": TOLERANCE},
        "inputs": {k: {"file": v["file"], "sha256": v["sha256"], "shape": v["shape"]} for k, v in inputs.items()},
        "models": [],
    }
    for cfg in MODELS:
        W = make_weights(cfg)
        sd = state_dict(W)
        files = {}
        for kind in cfg["files"]:
            path = os.path.join(OUT, cfg["name"] + (".safetensors" if kind == "safetensors" else ".pth"))
            if kind == "safetensors":
                write_safetensors(path, W, metadata={"format": "pt"})
                back = read_safetensors(path)
                assert list(back) == list(W)
            elif kind == "pth-model":
                args = argparse.Namespace(model="shunted_t", input_size=224, drop_path=0.1, lr=5e-4, epochs=300)
                optimizer = {"state": {0: {"step": 10, "exp_avg": torch.ones(3)}},
                             "param_groups": [{"lr": 1e-4, "params": [0]}]}
                torch.save({"model": sd, "optimizer": optimizer, "lr_scheduler": {"last_epoch": 299}, "epoch": 299,
                            "scaler": {"scale": 65536.0}, "args": args}, path)
                back = {k: v.numpy() for k, v in torch.load(path)["model"].items()}
                assert list(back) == list(sd)
            else:
                torch.save(sd, path)
                back = {k: v.numpy() for k, v in torch.load(path).items()}
                assert list(back) == list(sd)
            for k in W:  # the goldens below are computed from exactly what the files hold
                assert back[k].dtype == np.float32 and np.array_equal(back[k], W[k]), (path, k)
            files[kind] = os.path.basename(path)
        Wt = f64(W)

        cases = []
        for input_name, inp in inputs.items():
            r = ref.forward(Wt, inp["tensor"], cfg["num_heads"])
            logits = r["logits"]
            spread = float((logits[0] - logits[-1]).abs().max()) if logits.shape[0] > 1 else None
            assert spread is None or spread > 0.1, (cfg["name"], input_name, spread)
            effects = {}
            for mutation in sorted(ref.MUTATIONS):
                other = ref.forward(Wt, inp["tensor"], cfg["num_heads"], mutations=[mutation])["logits"]
                effects[mutation] = float((other - logits).abs().max())
                assert effects[mutation] > MIN_EFFECT_EVERY_CASE, (cfg["name"], input_name, mutation, effects[mutation])
            cases.append({"input": input_name, "imgSize": inp["shape"][2], "stages": r["stages"],
                          "logits": [[float(v) for v in row] for row in logits.tolist()],
                          "mutationEffects": effects})
        golden["models"].append({
            "name": cfg["name"],
            "files": files,
            "arch": arch_record(cfg, Wt),
            "numTensors": len(W),
            "numBatchNormCounters": len(sd) - len(W),
            "cases": cases,
        })

    for mutation in ref.MUTATIONS:
        strongest = max(c["mutationEffects"][mutation] for m in golden["models"] for c in m["cases"])
        assert strongest > MIN_EFFECT_SOME_CASE, (mutation, strongest)

    with open(os.path.join(OUT, "golden.json"), "w") as f:
        json.dump(golden, f, separators=(",", ":"))
        f.write("\n")
    for name in sorted(os.listdir(OUT)):
        print(f"  {name}: {os.path.getsize(os.path.join(OUT, name))} bytes")
    for m in golden["models"]:
        for c in m["cases"]:
            e = c["mutationEffects"]
            print(f"  {m['name']} {c['input']}: |logits| <= {max(abs(v) for row in c['logits'] for v in row):.3f}; "
                  f"smallest mutation effect {min(e.values()):.3g} ({min(e, key=e.get)})")


if __name__ == "__main__":
    main()
