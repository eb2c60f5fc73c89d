{
  "targets": [
    {
      "target_name": "mixlora",
      "sources": ["bindings/addon.cc", "bindings/table.cc", "bindings/ops_create.cc", "bindings/ops_shape.cc",
                  "bindings/ops_math.cc", "bindings/ops_nn.cc", "bindings/autograd.cc", "bindings/optim.cc",
                  "bindings/runtime.cc", "bindings/profile.cc", "bindings/host_allocator.cc",
                  "kernels/linear.cc", "kernels/small_gemm.cc", "kernels/low_rank_rows.cc",
                  "kernels/decode_attention.cc", "kernels/fused.cc", "kernels/quant.cc", "kernels/optim_8bit.cc",
                  "distributed/distributed.cc", "distributed/nccl.cc", "distributed/lifeline.cc"],
      "include_dirs": [".", "<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "<!@(node ../scripts/libtorch.mjs defines)"],
      "cflags!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=gnu++20"],
      "cflags_cc": ["-O2", "-fopenmp", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter",
                    "-Wno-deprecated-declarations", "-Winvalid-pch",
                    "-include<(module_root_dir)/build/pch/pch.h", "<!@(node ../scripts/libtorch.mjs cflags)"],
      "ldflags": ["<!@(node ../scripts/libtorch.mjs ldflags)"],
      "libraries": ["<!@(node ../scripts/libtorch.mjs libraries)"],
      "actions": [
        {
          "action_name": "precompiled_header",
          "message": "precompiling pch.h",
          "inputs": ["pch.h"],
          "outputs": ["<(module_root_dir)/build/pch/pch.h.gch"],
          "action": ["sh", "-c", "cd <(module_root_dir)/build && mkdir -p pch && cp ../pch.h pch/pch.h && $(CXX.target) -x c++-header -o pch/pch.h.gch pch/pch.h $(DEFS_$(BUILDTYPE)) $(INCS_$(BUILDTYPE)) $(CFLAGS_$(BUILDTYPE)) $(filter-out -include%,$(CFLAGS_CC_$(BUILDTYPE))) $(CXXFLAGS.target)"]
        }
      ]
    }
  ]
}
