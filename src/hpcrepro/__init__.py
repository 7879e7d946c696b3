"""hpcrepro: reproduce NVIDIA's MLPerf Training ResNet-50 results on a Slurm cluster."""

__version__ = "0.1.0"
