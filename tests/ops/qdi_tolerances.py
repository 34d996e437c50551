"""One (dtype) -> (rtol, atol) table for the QDI op and layer tests."""

import torch

TOL = {torch.float64: (1e-10, 1e-12), torch.float32: (1e-5, 1e-6)}
