"""Run-time choice of the data path and the step compilation, and how a wrong ask is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hpcrepro.errors import UserError
from hpcrepro.workload import config
from hpcrepro.workload.fastpath import (
    choose_compile,
    choose_data_backend,
    dali_problem,
    nvimgcodec_problem,
    nvjpeg_problem,
)

SRC = str(Path(__file__).resolve().parents[1] / "src")


def works() -> None:
    return None


def broken() -> str:
    return "torchvision cannot be imported (ModuleNotFoundError)"


def never() -> str:
    raise AssertionError("a CPU run must not probe the GPU decoder")


def absent() -> str:
    return "nvImageCodec is not installed (ModuleNotFoundError: No module named 'nvidia')"


def no_dali() -> str:
    return "DALI is not installed (ModuleNotFoundError: No module named 'nvidia.dali')"


def probes(nvjpeg, nvimgcodec, dali=no_dali) -> dict:
    return {"nvjpeg": nvjpeg, "nvimgcodec": nvimgcodec, "dali": dali}


def test_auto_takes_dali_first_where_it_decodes_here():
    assert choose_data_backend("auto", True, probes(never, never, works)).name == "dali"
    choice = choose_data_backend("auto", True, probes(works, never))
    assert choice.name == "nvjpeg" and "dali: DALI is not installed" in choice.reason
    assert choose_data_backend("dali", True, probes(never, never, works)).name == "dali"
    with pytest.raises(UserError, match=r"dali .* cannot decode on this GPU: DALI is not") as err:
        choose_data_backend("dali", True, probes(works, works))
    assert "nvidia-dali-cuda130" in (err.value.hint or "")
    with pytest.raises(UserError, match=r"dali .* needs a GPU"):
        choose_data_backend("dali", False, probes(never, never, never))


def test_the_dali_probe_names_what_is_missing_instead_of_raising():
    pytest.importorskip("torch")
    problem = dali_problem("cpu")
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        assert problem is not None and problem.startswith("DALI is not installed")
    else:
        assert problem == "cpu is not a GPU"


def test_auto_decodes_on_the_gpu_where_nvjpeg_works_and_with_pillow_elsewhere():
    assert choose_data_backend("auto", True, probes(works, never)).name == "nvjpeg"
    fallback = choose_data_backend("auto", True, probes(broken, absent))
    assert fallback.name == "cpu" and "torchvision cannot be imported" in fallback.reason
    assert "nvimgcodec: nvImageCodec is not installed" in fallback.reason
    assert choose_data_backend("auto", False, probes(never, never)).name == "cpu"
    assert choose_data_backend("cpu", True, probes(never, never)).name == "cpu"


def test_auto_takes_nvimgcodec_where_torchvisions_nvjpeg_does_not_work_and_says_why():
    choice = choose_data_backend("auto", True, probes(broken, works))
    assert choice.name == "nvimgcodec"
    assert "nvjpeg: torchvision cannot be imported" in choice.reason


def test_a_named_gpu_backend_is_probed_alone_and_kept():
    assert choose_data_backend("nvimgcodec", True, probes(never, works)).name == "nvimgcodec"
    assert choose_data_backend("nvjpeg", True, probes(works, never)).name == "nvjpeg"


def test_nvjpeg_asked_for_where_it_cannot_work_is_an_error_that_says_why():
    with pytest.raises(UserError, match="needs a GPU") as on_cpu:
        choose_data_backend("nvjpeg", False, probes(never, never))
    assert "--data-backend cpu" in (on_cpu.value.hint or "")
    with pytest.raises(UserError, match="cannot decode on this GPU: torchvision cannot"):
        choose_data_backend("nvjpeg", True, probes(broken, never))


def test_nvimgcodec_asked_for_where_it_is_missing_is_an_error_not_a_fallback():
    with pytest.raises(UserError, match=r"nvimgcodec .* needs a GPU"):
        choose_data_backend("nvimgcodec", False, probes(never, never))
    with pytest.raises(UserError, match="cannot decode on this GPU: nvImageCodec is not") as err:
        choose_data_backend("nvimgcodec", True, probes(works, absent))
    assert "nvidia-nvimgcodec-cu13" in (err.value.hint or "")
    assert "--data-backend nvjpeg" in (err.value.hint or "")


def test_auto_compiles_on_a_gpu_only_and_a_named_mode_is_kept():
    assert choose_compile("auto", True).name == "default"
    assert choose_compile("auto", False).name == "off"
    assert choose_compile("reduce-overhead", False).name == "reduce-overhead"


def test_the_nvimgcodec_probe_names_what_is_missing_instead_of_raising():
    pytest.importorskip("torch")
    problem = nvimgcodec_problem("cpu")
    assert problem is not None
    try:
        from nvidia import nvimgcodec  # noqa: F401
    except ImportError:
        assert problem.startswith("nvImageCodec is not installed")
    else:  # installed but a CPU device: it cannot start, or its decode fails, with the reason
        assert problem.startswith("nvImageCodec")


def test_the_probe_reports_a_missing_torchvision_or_a_cpu_device_as_a_reason():
    pytest.importorskip("torch")
    problem = nvjpeg_problem("cpu")
    try:
        import torchvision.io  # noqa: F401
    except ImportError:
        assert problem is not None and problem.startswith("torchvision cannot be imported")
    else:
        assert problem == "cpu is not a GPU"


def _resolve(argv: list[str], env: dict[str, str]) -> config.RunConfig:
    args = config.build_parser().parse_args(["--data-dir", "/data", *argv])
    return config.resolve(args, env, "CPU")


def test_flags_and_variables_choose_the_paths_and_bad_values_are_refused():
    default = _resolve([], {})
    assert (default.data_backend, default.compile_mode) == ("auto", "auto")
    env = {"HPCREPRO_DATA_BACKEND": "cpu", "HPCREPRO_COMPILE": "off"}
    assert (_resolve([], env).data_backend, _resolve([], env).compile_mode) == ("cpu", "off")
    flagged = _resolve(["--data-backend", "nvjpeg", "--compile", "reduce-overhead"], env)
    assert (flagged.data_backend, flagged.compile_mode) == ("nvjpeg", "reduce-overhead")
    assert _resolve(["--data-backend", "nvimgcodec"], {}).data_backend == "nvimgcodec"
    assert _resolve([], {"HPCREPRO_DATA_BACKEND": "dali"}).data_backend == "dali"
    with pytest.raises(UserError, match="HPCREPRO_DATA_BACKEND='DALI' is not one of"):
        _resolve([], {"HPCREPRO_DATA_BACKEND": "DALI"})
    with pytest.raises(UserError, match="HPCREPRO_COMPILE='fast' is not one of"):
        _resolve([], {"HPCREPRO_COMPILE": "fast"})


def test_the_entry_point_refuses_gpu_decoding_on_a_cpu_run_with_exit_code_2(tmp_path):
    pytest.importorskip("torch")
    train = [sys.executable, "-m", "hpcrepro.workload.train", "--profile", "tiny"]
    result = subprocess.run(
        [*train, "--device", "cpu", "--data-dir", str(tmp_path), "--data-backend", "nvjpeg"],
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "error: --data-backend nvjpeg (HPCREPRO_DATA_BACKEND) needs a GPU" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
