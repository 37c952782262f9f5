// Which instruction set the C++ CPU kernels run on, chosen at run time.
//
// The extension is compiled for baseline x86-64; the AVX-512 micro-kernels carry
// per-function target attributes and only run when the CPU (and OS) support them. The
// path is the best the CPU runs, or the one PHA_CPU_ISA names (read on every call, so
// tests can switch it): generic | avx512 | avx512_bf16 | amx_bf16 | auto. Naming a path
// this CPU cannot run is an error, never a silent fallback.
//
// auto takes the last path of that list the CPU runs. Paths differ only in their bf16
// kernels (fp32 runs on the AVX-512 FMA kernels from avx512 up), so for bf16 auto means:
// AMX tiles where the CPU has AMX-BF16 and the OS grants the tile state (oneDNN's bf16
// GEMM runs there too, ~3x its fp32 rate on the Xeon measured in the README), else the
// AVX512_BF16 dot products, else bf16 widened to fp32.
#pragma once

#include <string>
#include <vector>

// The target of functions compiled for the avx512 path and up (the features
// CpuFeatures::avx512 requires); they run only after dispatch has checked them.
#define PHA_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))

namespace pha_cpu {

enum class Isa {
  Generic,     // portable C++ (any x86-64); the only path for float64
  Avx512,      // AVX-512F/BW/VL/DQ + FMA fp32 micro-kernels; bf16 widened to fp32
  Avx512Bf16,  // as Avx512, and bf16 products on AVX512_BF16 dot products (vdpbf16ps)
  AmxBf16,     // as Avx512Bf16, and the bf16 GEMMs on AMX tiles (tdpbf16ps)
};

// Features detected once (cpuid, and xgetbv for the OS-enabled register state).
struct CpuFeatures {
  bool avx512;        // avx512f, avx512bw, avx512vl, avx512dq and fma
  bool avx512_bf16;   // vdpbf16ps / vcvtne2ps2bf16
  bool avx512_fp16;   // detected and reported; no kernel uses it (no fp16 CPU path)
  bool amx_in_cpuid;  // amx_bf16 + amx_tile in cpuid
  bool amx_bf16;      // and the OS enables the tile state (XCR0) and (Linux) grants it to us
  std::string amx_unusable;  // why amx_bf16 is false ("" when it is true)
};

const CpuFeatures& cpu_features();
Isa active_isa();                          // throws on an unknown or unrunnable PHA_CPU_ISA
const char* isa_name(Isa isa);
std::vector<std::string> runnable_isas();  // e.g. {"generic", "avx512", "avx512_bf16"}

}  // namespace pha_cpu
