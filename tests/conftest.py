"""Test-wide settings: one torch thread. The models here are tiny, so a second thread buys nothing, and on a
shared 2-core machine oversubscription made single tests several times slower."""

import torch

torch.set_num_threads(1)
