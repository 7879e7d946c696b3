"""The reference ResNet-50 workload: PyTorch training that logs MLPerf MLLOG lines.

It lets a site check its whole pipeline (Slurm, srun across nodes, data path, logs, scoring) without
NVIDIA's container. Modules here import torch at module level, so nothing outside this package may
import them at start-up (`hpcrepro --help` must stay fast); import them inside functions.
"""
