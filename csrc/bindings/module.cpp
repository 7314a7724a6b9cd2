// The facegeom._C Python module. Ops register themselves with the dispatcher
// (TORCH_LIBRARY_FRAGMENT in each family's file) when this library is loaded;
// the module itself only reports how it was built.
#include <Python.h>

static struct PyModuleDef facegeom_module = {PyModuleDef_HEAD_INIT, "_C",
                                             "facegeom compiled kernels", -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* module = PyModule_Create(&facegeom_module);
  if (module == nullptr) return nullptr;
#ifdef FACEGEOM_WITH_CUDA
  PyModule_AddIntConstant(module, "WITH_CUDA", 1);
#else
  PyModule_AddIntConstant(module, "WITH_CUDA", 0);
#endif
#ifdef _OPENMP
  PyModule_AddIntConstant(module, "WITH_OPENMP", 1);
#else
  PyModule_AddIntConstant(module, "WITH_OPENMP", 0);
#endif
  return module;
}
