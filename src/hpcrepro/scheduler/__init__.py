"""Schedulers that run a campaign's stage graph: Slurm (sbatch/sacct) and the local machine."""
