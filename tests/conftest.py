"""Suite-wide test settings: tiny networks run faster on one torch thread (CI has 2 cores);
the console is 200 columns wide, so a message naming a long temporary path (whose length
grows with pytest's run counter) is not wrapped inside a word the test looks for."""

import os

import matplotlib
import torch

matplotlib.use("Agg")
torch.set_num_threads(1)
os.environ["COLUMNS"] = "200"
