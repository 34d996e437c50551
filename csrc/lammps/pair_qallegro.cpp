#include "pair_qallegro.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"

#include "ops_library.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>
#include <unordered_map>

#ifndef QALLEGRO_OPS_LIBRARY_DEFAULT
#define QALLEGRO_OPS_LIBRARY_DEFAULT ""
#endif

using namespace LAMMPS_NS;

namespace {

// The extra files `qallegro export` writes (python/qallegro/deploy/export.py, METADATA_KEYS).
const char *const kMetadataKeys[] = {"qallegro_format", "qallegro_version", "model_kind", "model_dtype",
                                     "r_max",           "type_names",       "num_types",  "edge_forces",
                                     "metatomic-version"};
const char *const kFormatVersion = "1";

std::string join(const std::vector<std::string> &items) {
  std::string out;
  for (const auto &s : items) out += (out.empty() ? "" : " ") + s;
  return out;
}

// First line of a torch error: the rest is a C++/TorchScript backtrace.
std::string first_line(const std::string &message) {
  auto end = message.find('\n');
  return end == std::string::npos ? message : message.substr(0, end);
}

// What a file that TorchScript cannot load is, for the error message: a torch.save archive (training
// checkpoint or `save_model` file: pickled data, no TorchScript code) or something else.
std::string describe_unloadable(const std::string &path, const std::string &why) {
  if (why.find("qallegro::") != std::string::npos)
    return "calls qallegro's compiled ops, and libqallegro_ops.so is not loaded: set QALLEGRO_OPS_LIBRARY to the "
           "path printed by python -c 'import qallegro.ops; print(qallegro.ops.library_path())', or re-export "
           "with `qallegro export --portable`";
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    if (reader.hasRecord("data.pkl") && !reader.hasRecord("constants.pkl"))
      return "is a checkpoint or saved model (torch.save), not an export: run `qallegro export " + path +
             " -o model.pt` and give LAMMPS model.pt";
  } catch (const std::exception &) {
    // not a zip archive at all
  }
  return "is not a qallegro export";
}

}  // namespace

PairQAllegro::PairQAllegro(LAMMPS *lmp) : Pair(lmp) {
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  single_enable = 0;
  // the model returns the virial itself (strain derivative); LAMMPS must not add f·r on top
  no_virial_fdotr_compute = 1;
  // per-atom virials come from the pair forces -dE/dr_ij of exports that return them (9 components)
  centroidstressflag = CENTROID_AVAIL;
}

PairQAllegro::~PairQAllegro() {
  if (copymode) return;
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
  }
}

void PairQAllegro::allocate() {
  allocated = 1;
  int n = atom->ntypes;
  memory->create(setflag, n + 1, n + 1, "pair:setflag");
  memory->create(cutsq, n + 1, n + 1, "pair:cutsq");
  for (int i = 1; i <= n; i++)
    for (int j = i; j <= n; j++) setflag[i][j] = 0;
}

void PairQAllegro::settings(int narg, char **arg) {
  int iarg = 0;
  while (iarg < narg) {
    if (std::strcmp(arg[iarg], "device") == 0 && iarg + 1 < narg) {
      try {
        device_ = torch::Device(arg[iarg + 1]);
      } catch (const std::exception &e) {
        error->all(FLERR, std::string("pair_style qallegro: bad device '") + arg[iarg + 1] + "': " +
                              first_line(e.what()));
      }
      if (device_.is_cuda() && !torch::cuda::is_available())
        error->all(FLERR, std::string("pair_style qallegro: device ") + arg[iarg + 1] +
                              " requested, but this libtorch has no CUDA (a CPU-only build) or sees no GPU; "
                              "use device cpu, or build the plugin against a CUDA torch");
      iarg += 2;
    } else {
      error->all(FLERR, std::string("pair_style qallegro: unknown or incomplete keyword '") + arg[iarg] +
                            "' (usage: pair_style qallegro [device cpu|cuda|cuda:N])");
    }
  }
}

void PairQAllegro::coeff(int narg, char **arg) {
  if (!allocated) allocate();
  const int ntypes = atom->ntypes;
  if (narg < 3 || std::strcmp(arg[0], "*") != 0 || std::strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_coeff for qallegro must be: pair_coeff * * model.pt <name of type 1> ... <name of type N>");
  model_path_ = arg[2];
  if (narg != 3 + ntypes)
    error->all(FLERR, "pair_coeff * * " + model_path_ + ": needs one model type name per LAMMPS atom type (" +
                          std::to_string(ntypes) + " types), got " + std::to_string(narg - 3));

  if (!std::ifstream(model_path_).good()) error->all(FLERR, "pair_coeff: cannot open model file " + model_path_);

  auto ops = qallegro::ensure_ops_library(QALLEGRO_OPS_LIBRARY_DEFAULT);
  if (!ops.loaded && comm->me == 0)
    error->warning(FLERR, "qallegro: libqallegro_ops.so not loaded; models using torch.ops.qallegro.* will "
                          "fail to load. Tried:\n" + ops.problem + "Set QALLEGRO_OPS_LIBRARY to the path "
                          "printed by: python -c 'import qallegro.ops; print(qallegro.ops.library_path())'");

  std::unordered_map<std::string, std::string> metadata;
  for (const char *key : kMetadataKeys) metadata[key] = "";
  try {
    model_ = torch::jit::load(model_path_, device_, metadata);
  } catch (const std::exception &e) {
    error->all(FLERR, "pair_coeff: " + model_path_ + " " + describe_unloadable(model_path_, e.what()) +
                          " (TorchScript could not load it: " + first_line(e.what()) + ")");
  }
  if (metadata["qallegro_format"].empty() && !metadata["metatomic-version"].empty())
    error->all(FLERR, "pair_coeff: " + model_path_ + " is a metatomic model, not a qallegro export: run it with "
                      "pair_style metatomic (a LAMMPS built with metatomic), or export with `qallegro export` "
                      "(default --format torchscript) for pair_style qallegro");
  if (metadata["qallegro_format"].empty())
    error->all(FLERR, "pair_coeff: " + model_path_ + " is a TorchScript file but not a qallegro export "
                      "(no 'qallegro_format' metadata); write it with `qallegro export`");
  if (metadata["qallegro_format"] != kFormatVersion)
    error->all(FLERR, "pair_coeff: " + model_path_ + " has qallegro export format " +
                          metadata["qallegro_format"] + ", this plugin reads format " + kFormatVersion);
  model_.eval();
  edge_forces_ = metadata["edge_forces"] == "1";

  const std::string &dtype = metadata["model_dtype"];
  if (dtype == "float64") {
    dtype_ = torch::kFloat64;
  } else if (dtype == "float32") {
    dtype_ = torch::kFloat32;
  } else {
    error->all(FLERR, "pair_coeff: " + model_path_ + " has unsupported model_dtype '" + dtype + "'");
  }
  try {
    r_max_ = std::stod(metadata["r_max"]);
  } catch (const std::exception &) {
    error->all(FLERR, "pair_coeff: " + model_path_ + " has no valid r_max metadata ('" + metadata["r_max"] + "')");
  }
  model_type_names_.clear();
  std::istringstream names(metadata["type_names"]);
  for (std::string name; names >> name;) model_type_names_.push_back(name);

  // map LAMMPS types (1..ntypes) to model types by name; every type must be known to the model
  type_map_.assign(ntypes + 1, -1);
  for (int itype = 1; itype <= ntypes; itype++) {
    const std::string name = arg[2 + itype];
    auto it = std::find(model_type_names_.begin(), model_type_names_.end(), name);
    if (it == model_type_names_.end())
      error->all(FLERR, "pair_coeff: LAMMPS atom type " + std::to_string(itype) + " is mapped to '" + name +
                            "', which " + model_path_ + " does not know (model types: " + join(model_type_names_) +
                            ")");
    type_map_[itype] = it - model_type_names_.begin();
  }
  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++) setflag[i][j] = 1;

  if (comm->me == 0) {
    std::string line = "qallegro: loaded " + model_path_ + " (kind " + metadata["model_kind"] + ", " + dtype +
                       ", r_max " + metadata["r_max"] + " A, qallegro " + metadata["qallegro_version"] +
                       ", ops: " + (ops.loaded ? ops.source : "not loaded") + ")\n  type map:";
    for (int itype = 1; itype <= ntypes; itype++)
      line += " " + std::to_string(itype) + "->" + model_type_names_[type_map_[itype]];
    utils::logmesg(lmp, line + "\n");
  }
}

void PairQAllegro::init_style() {
  // the model's energies are eV and lengths Å: any other unit style would silently misread them
  if (std::strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, std::string("pair_style qallegro requires units metal (eV, Angstrom), but the input "
                                  "uses units ") + update->unit_style + "; put `units metal` before the box is created");
  if (force->newton_pair == 0)
    error->all(FLERR, "pair_style qallegro requires newton pair on (forces on ghost atoms are reverse-communicated)");
  neighbor->add_request(this, NeighConst::REQ_FULL);
}

double PairQAllegro::init_one(int i, int j) {
  if (setflag[i][j] == 0) error->all(FLERR, "pair_style qallegro: pair_coeff * * was not given for all types");
  return r_max_;
}

void PairQAllegro::compute(int eflag, int vflag) {
  ev_init(eflag, vflag);
  const bool per_atom_virial = vflag_atom || cvflag_atom;
  if (per_atom_virial && !edge_forces_)
    error->all(FLERR, "pair_style qallegro: " + model_path_ + " returns no pair forces, so no per-atom virials "
                      "(compute stress/atom, centroid/stress/atom, heat/flux): re-export it with this qallegro");

  double **x = atom->x;
  double **f = atom->f;
  const int *type = atom->type;
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const int inum = list->inum;
  const int *ilist = list->ilist;
  const int *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;
  const double cutsq_model = r_max_ * r_max_;

  // edges: centre i local, neighbour j local or ghost, |r_ij| < r_max (the model's strict cutoff);
  // LAMMPS's list also holds pairs out to r_max + skin
  std::vector<int64_t> centres, neighbours;
  for (int ii = 0; ii < inum; ii++) {
    const int i = ilist[ii];
    const int *jlist = firstneigh[i];
    for (int jj = 0; jj < numneigh[i]; jj++) {
      const int j = jlist[jj] & NEIGHMASK;
      const double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
      if (dx * dx + dy * dy + dz * dz < cutsq_model) {
        centres.push_back(i);
        neighbours.push_back(j);
      }
    }
  }
  const int64_t nedges = static_cast<int64_t>(centres.size());

  auto pos = torch::empty({nall, 3}, torch::TensorOptions().dtype(torch::kFloat64));
  auto atom_types = torch::empty({nall}, torch::TensorOptions().dtype(torch::kInt64));
  auto edge_index = torch::empty({2, nedges}, torch::TensorOptions().dtype(torch::kInt64));
  {
    auto p = pos.accessor<double, 2>();
    auto t = atom_types.accessor<int64_t, 1>();
    for (int i = 0; i < nall; i++) {
      p[i][0] = x[i][0];
      p[i][1] = x[i][1];
      p[i][2] = x[i][2];
      t[i] = type_map_[type[i]];
    }
    std::copy(centres.begin(), centres.end(), edge_index.data_ptr<int64_t>());
    std::copy(neighbours.begin(), neighbours.end(), edge_index.data_ptr<int64_t>() + nedges);
  }

  c10::Dict<std::string, torch::Tensor> input;
  input.insert("pos", pos.to(device_, dtype_));
  input.insert("edge_index", edge_index.to(device_));
  input.insert("atom_types", atom_types.to(device_));
  input.insert("num_local", torch::full({1}, static_cast<int64_t>(nlocal), torch::kInt64).to(device_));

  torch::Tensor forces, atomic_energy, model_virial, edge_forces;
  try {
    // the model takes forces and virial by autograd: grad mode must be on whatever the host set
    torch::AutoGradMode grad_mode(true);
    auto output = model_.forward({input}).toGenericDict();
    forces = output.at("forces").toTensor().to(torch::kCPU, torch::kFloat64).contiguous();
    atomic_energy = output.at("atomic_energy").toTensor().to(torch::kCPU, torch::kFloat64).contiguous();
    model_virial = output.at("virial").toTensor().to(torch::kCPU, torch::kFloat64).contiguous();
    if (per_atom_virial)
      edge_forces = output.at("edge_forces").toTensor().to(torch::kCPU, torch::kFloat64).contiguous();
  } catch (const std::exception &e) {
    error->one(FLERR, "pair_style qallegro: model " + model_path_ + " failed: " + first_line(e.what()));
  }
  if (forces.size(0) != nall || atomic_energy.size(0) != nall)
    error->one(FLERR, "pair_style qallegro: model returned " + std::to_string(forces.size(0)) +
                          " forces for " + std::to_string(nall) + " atoms");

  // ghost forces are summed onto their owners by LAMMPS's reverse communication (newton on)
  auto fm = forces.accessor<double, 2>();
  for (int i = 0; i < nall; i++) {
    f[i][0] += fm[i][0];
    f[i][1] += fm[i][1];
    f[i][2] += fm[i][2];
  }
  // ghosts' energies belong to their owner ranks' local copies: count local atoms only
  auto e = atomic_energy.accessor<double, 2>();
  if (eflag_global)
    for (int i = 0; i < nlocal; i++) eng_vdwl += e[i][0];
  if (eflag_atom)
    for (int i = 0; i < nlocal; i++) eatom[i] += e[i][0];
  if (vflag_global) {
    auto v = model_virial.accessor<double, 3>();
    // LAMMPS's order: xx, yy, zz, xy, xz, yz (the model's virial is symmetric)
    virial[0] += v[0][0][0];
    virial[1] += v[0][1][1];
    virial[2] += v[0][2][2];
    virial[3] += v[0][0][1];
    virial[4] += v[0][0][2];
    virial[5] += v[0][1][2];
  }

  if (per_atom_virial) {
    // edge e = (i, j) with r = x_j - x_i puts F_e = -dE/dr on j and -F_e on i; its virial r ⊗ F_e
    // goes half to each atom (ghost halves are reverse-communicated by the computes, newton on)
    auto ef = edge_forces.accessor<double, 2>();
    for (int64_t e = 0; e < nedges; e++) {
      const int i = static_cast<int>(centres[e]), j = static_cast<int>(neighbours[e]);
      const double r[3] = {x[j][0] - x[i][0], x[j][1] - x[i][1], x[j][2] - x[i][2]};
      double w[3][3];
      for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) w[a][b] = 0.5 * r[a] * ef[e][b];
      if (vflag_atom) {
        // the 6-component form is symmetric: off-diagonals averaged (their sum over atoms is symmetric anyway)
        const double v[6] = {w[0][0], w[1][1], w[2][2], 0.5 * (w[0][1] + w[1][0]), 0.5 * (w[0][2] + w[2][0]),
                             0.5 * (w[1][2] + w[2][1])};
        for (int k = 0; k < 6; k++) {
          vatom[i][k] += v[k];
          vatom[j][k] += v[k];
        }
      }
      if (cvflag_atom) {
        // LAMMPS's order: xx yy zz xy xz yz yx zx zy
        const double v[9] = {w[0][0], w[1][1], w[2][2], w[0][1], w[0][2], w[1][2], w[1][0], w[2][0], w[2][1]};
        for (int k = 0; k < 9; k++) {
          cvatom[i][k] += v[k];
          cvatom[j][k] += v[k];
        }
      }
    }
  }
}
