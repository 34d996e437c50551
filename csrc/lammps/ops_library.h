// Finding and loading libqallegro_ops.so from a C++ host, so TorchScript can resolve
// torch.ops.qallegro.* calls. Kept apart from LAMMPS so any libtorch host can reuse it.
#ifndef QALLEGRO_LAMMPS_OPS_LIBRARY_H
#define QALLEGRO_LAMMPS_OPS_LIBRARY_H

#include <string>

namespace qallegro {

/// Result of ensure_ops_library(): whether the ops are available and, if not, why.
struct OpsLibraryStatus {
  bool loaded = false;   ///< torch.ops.qallegro.* are registered in this process
  std::string source;    ///< "already registered" or the path that was dlopen-ed
  std::string problem;   ///< when !loaded: every path tried and dlerror() for each
};

/// Registers qallegro's ops unless they already are (e.g. Python imported qallegro first).
/// Tries, in order: $QALLEGRO_OPS_LIBRARY, libqallegro_ops.so next to the file containing this
/// code (the plugin installed in qallegro/lib), and `fallback_path` (set at build time).
/// Each is dlopen-ed with RTLD_GLOBAL; loading two copies would register the ops twice, hence
/// the registration check first.
OpsLibraryStatus ensure_ops_library(const std::string &fallback_path);

}  // namespace qallegro

#endif
