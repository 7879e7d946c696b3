"""Stand-in for `mxnet.cuda_utils`, a module only NVIDIA's NGC build of MXNet has.

mlperf-common's MXNet helpers import it for CUDA profiler and NVTX calls; upstream MXNet 1.9.1
(the real MXNet in the test images) lacks it and there is no GPU here. Any call is an error: the
launch steps under test never profile.
"""


def _no_gpu(*args, **kwargs):
    raise RuntimeError("mxnet.cuda_utils stand-in: no GPU profiling in the test images")


cuda_profiler_start = cuda_profiler_stop = nvtx_range_push = nvtx_range_pop = _no_gpu
