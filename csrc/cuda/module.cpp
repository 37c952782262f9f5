// The Python module pha._C_cuda. Importing it loads this library, whose
// TORCH_LIBRARY_IMPL blocks (one per op file) register the CUDA kernels of the ops that
// pha._C defines (torch.ops.pha_C; pha.ops imports pha._C first).
#include <Python.h>

extern "C" PyMODINIT_FUNC PyInit__C_cuda(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C_cuda", "pha CUDA kernels", -1,
                                      nullptr};
  return PyModule_Create(&module);
}
