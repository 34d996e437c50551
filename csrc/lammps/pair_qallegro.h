// pair_style qallegro: runs a model written by `qallegro export` (TorchScript, libtorch) in LAMMPS.
//
//   pair_style qallegro [device cpu|cuda|cuda:N]
//   pair_coeff * * model.pt Cu Li        (one model type name per LAMMPS atom type, in type order)
//
// The model sees local + ghost atoms with the edges of LAMMPS's full neighbour list whose centre
// is local and whose length is < r_max; forces on ghosts are reverse-communicated by LAMMPS, so
// `newton on` is required. Energy sums the local atoms' energies; the virial is the model's. Per-atom
// virials (compute stress/atom, centroid/stress/atom, heat/flux) split each edge's r_ij ⊗ F_ij
// equally between its atoms, F_ij = -dE/dr_ij being the pair force the export returns. `units metal`.
#ifndef QALLEGRO_PAIR_QALLEGRO_H
#define QALLEGRO_PAIR_QALLEGRO_H

#include "pair.h"

#include <torch/script.h>

#include <string>
#include <vector>

namespace LAMMPS_NS {

/// LAMMPS pair style evaluating a qallegro TorchScript export (see file comment for syntax).
class PairQAllegro : public Pair {
 public:
  /// Loads libqallegro_ops.so (unless its ops are already registered) so models using custom ops run.
  explicit PairQAllegro(class LAMMPS *lmp);
  ~PairQAllegro() override;
  /// Builds the model inputs from the full neighbour list, calls the model, tallies f, E, virial.
  void compute(int eflag, int vflag) override;
  /// `pair_style qallegro [device D]`.
  void settings(int narg, char **arg) override;
  /// `pair_coeff * * model.pt name_1 ... name_ntypes`: loads the model and maps types by name.
  void coeff(int narg, char **arg) override;
  /// Requests a full neighbour list; checks newton pair.
  void init_style() override;
  /// The model's r_max for every type pair.
  double init_one(int i, int j) override;

 private:
  void allocate();

  torch::jit::Module model_;
  torch::Device device_{torch::kCPU};
  torch::ScalarType dtype_{torch::kFloat64};
  double r_max_ = 0.0;
  /// The export returns "edge_forces" (-dE/dr_ij per edge): per-atom virials are available.
  bool edge_forces_ = false;
  std::string model_path_;
  std::vector<std::string> model_type_names_;
  /// type_map_[lammps_type] = model type index (index 0 unused: LAMMPS types start at 1).
  std::vector<int64_t> type_map_;
};

}  // namespace LAMMPS_NS

#endif
