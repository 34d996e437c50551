// The Python extension `qallegro._C`: importing it loads libqallegro_ops, whose static
// TORCH_LIBRARY blocks register every op. C++ hosts (LAMMPS) load libqallegro_ops directly.
#include <Python.h>

extern "C" {
PyObject* PyInit__C(void) {
    static struct PyModuleDef module_def = {
        PyModuleDef_HEAD_INIT, "_C", "qallegro's torch op library (ops live in torch.ops.qallegro)", -1,
        nullptr, nullptr, nullptr, nullptr, nullptr};
    return PyModule_Create(&module_def);
}
}
