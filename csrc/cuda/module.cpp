// The Python module pha._C_cuda. Importing it loads this library, whose TORCH_LIBRARY
// fragments (one per op file) register the CUDA kernels under torch.ops.pha_cuda.
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(pha_cuda, m) {}

extern "C" PyMODINIT_FUNC PyInit__C_cuda(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C_cuda", "pha CUDA kernels", -1,
                                      nullptr};
  return PyModule_Create(&module);
}
