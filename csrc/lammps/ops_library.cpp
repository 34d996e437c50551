#include "ops_library.h"

#include <ATen/core/dispatch/Dispatcher.h>

#include <dlfcn.h>

#include <cstdlib>
#include <vector>

namespace qallegro {

namespace {

bool ops_registered() {
  // every build of the op library defines this schema (csrc/ops.cpp)
  return c10::Dispatcher::singleton().findSchema({"qallegro::neighbor_list", ""}).has_value();
}

std::string directory_of_this_library() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void *>(&ensure_ops_library), &info) == 0 || info.dli_fname == nullptr) return "";
  std::string path(info.dli_fname);
  auto slash = path.rfind('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

}  // namespace

OpsLibraryStatus ensure_ops_library(const std::string &fallback_path) {
  OpsLibraryStatus status;
  if (ops_registered()) {
    status.loaded = true;
    status.source = "already registered";
    return status;
  }
  std::vector<std::string> candidates;
  if (const char *env = std::getenv("QALLEGRO_OPS_LIBRARY")) {
    if (*env) candidates.emplace_back(env);
  }
  std::string here = directory_of_this_library();
  if (!here.empty()) candidates.push_back(here + "/libqallegro_ops.so");
  if (!fallback_path.empty()) candidates.push_back(fallback_path);
  for (const auto &path : candidates) {
    // RTLD_GLOBAL: TorchScript resolves the ops through the dispatcher, which the library's static
    // TORCH_LIBRARY block fills when it is loaded
    void *handle = dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (handle != nullptr && ops_registered()) {
      status.loaded = true;
      status.source = path;
      return status;
    }
    const char *why = handle == nullptr ? dlerror() : "loaded but registered no qallegro ops";
    status.problem += "  " + path + ": " + (why ? why : "unknown error") + "\n";
  }
  if (candidates.empty()) status.problem = "  no candidate path (set QALLEGRO_OPS_LIBRARY)\n";
  return status;
}

}  // namespace qallegro
