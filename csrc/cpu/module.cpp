// The Python module pha._C, and the one schema of every pha kernel op (torch.ops.pha_C),
// as in pytorch/extension-cpp: each device's kernels register with TORCH_LIBRARY_IMPL
// (CPU in csrc/cpu/*.cpp, CUDA in csrc/cuda/*_binding.cpp, a separate library that
// pha.ops loads after this one). The launcher contract of pha/ops/*.py.
#include <Python.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "cpu_isa.h"

namespace {

std::string cpu_isa() { return pha_cpu::isa_name(pha_cpu::active_isa()); }

std::vector<std::string> cpu_features() {
  const pha_cpu::CpuFeatures& f = pha_cpu::cpu_features();
  std::vector<std::string> names;
  if (f.avx512) names.emplace_back("avx512");
  if (f.avx512_bf16) names.emplace_back("avx512_bf16");
  if (f.avx512_fp16) names.emplace_back("avx512_fp16");
  if (f.amx_bf16) names.emplace_back("amx_bf16");
  // A CPU with AMX whose tiles the OS withholds says so (cpuid alone would list it).
  else if (f.amx_in_cpuid)
    names.emplace_back("amx_bf16 unusable: " + f.amx_unusable);
  return names;
}

}  // namespace

TORCH_LIBRARY(pha_C, m) {
  m.def(
      "hyper_adapter_forward(Tensor x, Tensor w_down, Tensor b_down, Tensor w_up, Tensor b_up, "
      "Tensor? index, str activation, bool save_hidden) -> (Tensor, Tensor)");
  m.def(
      "hyper_adapter_backward(Tensor grad_out, Tensor x, Tensor w_down, Tensor w_up, "
      "Tensor hidden, Tensor? index, str activation) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("supcon_forward(Tensor z, Tensor labels, float temperature) -> (Tensor, Tensor)");
  m.def(
      "supcon_backward(Tensor grad_loss, Tensor z, Tensor labels, Tensor lse, float temperature)"
      " -> Tensor");
  m.def(
      "prototype_forward(Tensor z, Tensor prototypes, Tensor labels, float temperature,"
      " bool exclude_positive) -> (Tensor, Tensor)");
  m.def(
      "prototype_backward(Tensor grad_loss, Tensor z, Tensor prototypes, Tensor labels,"
      " Tensor lse, float temperature, bool exclude_positive) -> (Tensor, Tensor)");
  // Dropout keep masks from a seed (pha/compile.py's pha::dropout_mask on CPU).
  m.def("dropout_mask(Tensor x, float p, int seed) -> Tensor");
  // The CPU kernel path a call would take now (PHA_CPU_ISA or the best this CPU runs),
  // the paths this CPU can run, and the detected features.
  m.def("cpu_isa() -> str", &cpu_isa);
  m.def("cpu_isa_paths() -> str[]", &pha_cpu::runnable_isas);
  m.def("cpu_features() -> str[]", &cpu_features);
}

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "pha C++ CPU kernels", -1, nullptr};
  return PyModule_Create(&module);
}
