{
  "targets": [
    {
      "target_name": "mixlora",
      "sources": ["addon.cc", "table.cc", "ops_create.cc", "ops_shape.cc", "ops_math.cc", "ops_nn.cc",
                  "autograd.cc", "fused.cc", "optim.cc", "optim_8bit.cc", "quant.cc", "runtime.cc", "distributed.cc",
                  "nccl.cc", "lifeline.cc", "profile.cc", "linear.cc",
                  "small_gemm.cc", "low_rank_rows.cc", "decode_attention.cc", "host_allocator.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
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
