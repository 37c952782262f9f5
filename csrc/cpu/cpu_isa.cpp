#include "cpu_isa.h"

#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
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
    case Isa::AmxBf16: return f.avx512 && f.avx512_bf16 && f.amx_bf16;
  }
  return false;
}

constexpr Isa kAllIsas[] = {Isa::Generic, Isa::Avx512, Isa::Avx512Bf16, Isa::AmxBf16};

bool amx_bf16_in_cpuid() {
  unsigned eax, ebx, ecx, edx;
  return __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) && ((edx >> 22) & 1) && ((edx >> 24) & 1);
}

// "" when the AMX tiles of a CPU that has them are usable: tile state enabled in XCR0 and
// Linux's permission to use it (asked once per process); else why not.
std::string amx_tiles_withheld() {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !((ecx >> 27) & 1))
    return "the OS does not enable XSAVE (OSXSAVE)";
  unsigned xcr0_lo, xcr0_hi;
  __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  if (((xcr0_lo >> 17) & 3) != 3) return "the OS does not enable the AMX tile state (XCR0)";
#ifdef SYS_arch_prctl
  constexpr int kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0)
    return std::string("Linux refused arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA): ") +
           std::strerror(errno);
  return "";
#else
  return "no arch_prctl on this platform to request the AMX tile state";
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
    f.amx_in_cpuid = amx_bf16_in_cpuid();
    f.amx_unusable = f.amx_in_cpuid ? amx_tiles_withheld() : "the CPU has no amx_bf16/amx_tile";
    f.amx_bf16 = f.amx_unusable.empty();
    return f;
  }();
  return features;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Generic: return "generic";
    case Isa::Avx512: return "avx512";
    case Isa::Avx512Bf16: return "avx512_bf16";
    case Isa::AmxBf16: return "amx_bf16";
  }
  return "?";
}

std::vector<std::string> runnable_isas() {
  std::vector<std::string> names;
  for (Isa isa : kAllIsas)
    if (cpu_supports(isa)) names.emplace_back(isa_name(isa));
  return names;
}

Isa active_isa() {
  const char* asked = std::getenv("PHA_CPU_ISA");
  if (asked == nullptr || *asked == '\0' || std::strcmp(asked, "auto") == 0) {
    Isa best = Isa::Generic;  // the last path in kAllIsas the CPU runs (see cpu_isa.h)
    for (Isa isa : kAllIsas)
      if (cpu_supports(isa)) best = isa;
    return best;
  }
  for (Isa isa : kAllIsas) {
    if (std::strcmp(asked, isa_name(isa)) != 0) continue;
    const std::string& amx_why = cpu_features().amx_unusable;
    TORCH_CHECK(cpu_supports(isa), "PHA_CPU_ISA=", asked,
                " names kernels this CPU cannot run; it runs: ", c10::Join(", ", runnable_isas()),
                isa == Isa::AmxBf16 && !amx_why.empty() ? " (amx_bf16: " + amx_why + ")" : "");
    return isa;
  }
  TORCH_CHECK_VALUE(false,
                    "PHA_CPU_ISA must be one of auto, generic, avx512, avx512_bf16, amx_bf16, got '",
                    asked, "'");
}

}  // namespace pha_cpu
