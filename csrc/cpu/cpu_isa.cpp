#include "cpu_isa.h"

#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace pha_cpu {
namespace {

bool cpu_supports(Isa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::Generic: return true;
    case Isa::Avx512: return f.avx512;
    case Isa::Avx512Bf16: return f.avx512 && f.avx512_bf16;
  }
  return false;
}

// AMX-BF16 in cpuid, tile state enabled in XCR0, and Linux's permission to use it.
bool detect_amx_bf16() {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  const bool amx_bf16 = (edx >> 22) & 1, amx_tile = (edx >> 24) & 1;
  if (!amx_bf16 || !amx_tile) return false;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !((ecx >> 27) & 1)) return false;  // OSXSAVE
  unsigned xcr0_lo, xcr0_hi;
  __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  if (((xcr0_lo >> 17) & 3) != 3) return false;  // XTILECFG and XTILEDATA
#ifdef SYS_arch_prctl
  constexpr int kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = [] {
    __builtin_cpu_init();  // libgcc also checks that the OS saves the AVX-512 state
    CpuFeatures f{};
    f.avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("fma");
    f.avx512_bf16 = f.avx512 && __builtin_cpu_supports("avx512bf16");
    f.avx512_fp16 = f.avx512 && __builtin_cpu_supports("avx512fp16");
    f.amx_bf16 = detect_amx_bf16();
    return f;
  }();
  return features;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Generic: return "generic";
    case Isa::Avx512: return "avx512";
    case Isa::Avx512Bf16: return "avx512_bf16";
  }
  return "?";
}

std::vector<std::string> runnable_isas() {
  std::vector<std::string> names;
  for (Isa isa : {Isa::Generic, Isa::Avx512, Isa::Avx512Bf16})
    if (cpu_supports(isa)) names.emplace_back(isa_name(isa));
  return names;
}

Isa active_isa() {
  const char* asked = std::getenv("PHA_CPU_ISA");
  if (asked == nullptr || *asked == '\0' || std::strcmp(asked, "auto") == 0) {
    for (Isa isa : {Isa::Avx512Bf16, Isa::Avx512})
      if (cpu_supports(isa)) return isa;
    return Isa::Generic;
  }
  for (Isa isa : {Isa::Generic, Isa::Avx512, Isa::Avx512Bf16}) {
    if (std::strcmp(asked, isa_name(isa)) != 0) continue;
    TORCH_CHECK(cpu_supports(isa), "PHA_CPU_ISA=", asked,
                " names kernels this CPU cannot run; it runs: ", c10::Join(", ", runnable_isas()));
    return isa;
  }
  TORCH_CHECK_VALUE(false, "PHA_CPU_ISA must be one of auto, generic, avx512, avx512_bf16, got '",
                    asked, "'");
}

}  // namespace pha_cpu
