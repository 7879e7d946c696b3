"""Describe real nodes (NVML + OS) and turn them into a system YAML and an MLPerf system JSON.

`python3 -m hpcrepro.detect --json` needs only the standard library and nvidia-ml-py, so it can
capture a node where the rest of hpcrepro's dependencies are not installed.
"""
