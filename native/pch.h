// The headers every translation unit of the addon parses, compiled once per build into a precompiled header
// (binding.gyp's "precompiled_header" action) and force-included into each source with -include. ATen's
// headers take most of a source file's compile time; parsing them once instead of once per source makes a
// fresh build (npm install, make setup) about twice as fast. Headers only a few sources use (autograd's
// custom_function.h, c10d) stay out: a bigger precompiled header costs every source more to load than it
// saves those few. Every source still includes what it uses: the
// build is correct, only slower, where the compiler cannot use the precompiled header (-Winvalid-pch says so).
#include <napi.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
