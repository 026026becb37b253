"""Suite-wide test settings: tiny networks run faster on one torch thread (CI has 2 cores)."""

import matplotlib
import torch

matplotlib.use("Agg")
torch.set_num_threads(1)
