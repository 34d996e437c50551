"""One (dtype) -> (rtol, atol) table for the tests of qallegro.nn and the allegro_tp op."""

import torch

TOL = {torch.float64: (1e-10, 1e-12), torch.float32: (1e-4, 1e-5)}
DTYPES = [torch.float64, torch.float32]
