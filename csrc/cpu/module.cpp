// The Python module pha._C. Importing it loads this library, whose TORCH_LIBRARY
// fragments (one per op file) register the CPU kernels under torch.ops.pha_cpu.
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(pha_cpu, m) {}

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "pha C++ CPU kernels", -1, nullptr};
  return PyModule_Create(&module);
}
