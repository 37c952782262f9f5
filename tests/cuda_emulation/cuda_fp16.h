// CPU emulation of cuda_fp16.h's conversions (see cuda_runtime_api.h here).
#pragma once

struct __half {
  _Float16 value;
};

inline float __half2float(__half v) { return static_cast<float>(v.value); }
inline __half __float2half(float f) { return {static_cast<_Float16>(f)}; }
