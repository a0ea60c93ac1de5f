{
  "targets": [
    {
      "target_name": "evit",
      "sources": [
        "src/binding/addon.cc",
        "src/binding/backend_info.cc",
        "src/binding/model_handle.cc",
        "src/binding/forward_worker.cc",
        "src/backend/host_weights.cc",
        "src/backend/plan.cc",
        "src/backend/shunted.cc",
        "src/backend/no_cuda.cc",
        "src/cpu/thread_pool.cc",
        "src/cpu/cpu_model.cc",
        "src/cpu/shunted_model.cc",
        "src/cpu/layer_norm.cc",
        "src/cpu/linear.cc",
        "src/cpu/gelu.cc",
        "src/cpu/attend_heads.cc",
        "src/cpu/cls_attention.cc",
        "src/cpu/attention_pack.cc",
        "src/cpu/attention_avx512.cc",
        "src/cpu/attention_avx2.cc",
        "src/cpu/topk.cc",
        "src/cpu/gather_fuse.cc",
        "src/cpu/patch_embed.cc",
        "src/cpu/conv2d.cc",
        "src/cpu/depthwise_conv.cc",
        "src/cpu/group_attention.cc",
        "src/cpu/token_mean.cc",
        "src/cpu/vec_math.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "/usr/include/x86_64-linux-gnu/openblas-pthread"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS",
        "NODE_ADDON_API_DISABLE_DEPRECATED"
      ],
      "cflags_cc!": [
        "-fno-exceptions",
        "-fno-rtti"
      ],
      "cflags_cc": [
        "-std=c++17",
        "-O3",
        "-fexceptions",
        "-fvisibility=hidden"
      ],
      "libraries": [
        "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.a",
        "-lpthread",
        "-lm"
      ],
      "ldflags": [
        "-Wl,--exclude-libs,ALL",
        "-Wl,--as-needed",
        "-static-libgcc"
      ]
    }
  ]
}
