#!/usr/bin/env python3
"""The PyTorch peer of bench/gpu.js: timm's deit_small_patch16_224 (random weights) under
torch.autocast on CUDA, at the same batch sizes. Prints one JSON object on stdout.

Two timings per batch: the input already on the GPU (what PyTorch benchmarks usually quote),
and the input copied from pageable host memory each batch (what evit's forward() does).
Medians of per-batch wall times, each batch ended by torch.cuda.synchronize().
"""
import argparse
import json
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="1,64,256")
    ap.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    ap.add_argument("--seconds", type=float, default=2.0, help="timing budget per batch size and mode")
    args = ap.parse_args()
    try:
        import torch
        import timm
    except ImportError as e:
        print(json.dumps({"error": f"PyTorch peer unavailable: {e}"}))
        return 0
    if not torch.cuda.is_available():
        print(json.dumps({"error": "PyTorch sees no CUDA device"}))
        return 0
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    torch.manual_seed(0)
    model = timm.create_model("deit_small_patch16_224", pretrained=False).cuda().eval()
    out = {
        "model": "timm deit_small_patch16_224",
        "torch": torch.__version__,
        "timm": timm.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0),
        "autocast": args.dtype,
        "results": [],
    }
    for batch in [int(b) for b in args.batches.split(",")]:
        on_gpu = torch.randn(batch, 3, 224, 224, device="cuda")
        on_host = torch.randn(batch, 3, 224, 224)
        row = {"batch": batch}
        for mode, get in (("gpuInput", lambda: on_gpu), ("hostInput", lambda: on_host.cuda())):
            times = []
            with torch.inference_mode(), torch.autocast("cuda", dtype=dtype):
                for _ in range(3):  # warm-up: cuDNN/cuBLAS heuristics, allocator
                    model(get())
                torch.cuda.synchronize()
                deadline = time.perf_counter() + args.seconds
                while len(times) < 5 or (time.perf_counter() < deadline and len(times) < 500):
                    t0 = time.perf_counter()
                    model(get())
                    torch.cuda.synchronize()
                    times.append((time.perf_counter() - t0) * 1000)
            ms = statistics.median(times)
            row[mode] = {"msPerBatch": ms, "imgPerSec": batch / ms * 1000, "runs": len(times)}
        out["results"].append(row)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
