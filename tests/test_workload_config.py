"""Settings: profile defaults < NVIDIA's environment variables < flags; clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcrepro.errors import UserError
from hpcrepro.workload.config import build_parser, cache_cleared, platform_name, resolve


def settle(argv, env):
    return resolve(build_parser().parse_args(argv), env, "CPU")


def test_environment_overrides_profile_and_flags_override_environment():
    env = {
        "HPCREPRO_DATA_DIR": "/data",
        "BATCHSIZE": "204",
        "LR": "3.0",
        "NUMEPOCHS": "37",
        "WD": "5.0e-05",
        "SEED": "42",
        "OPTIMIZER": "sgdwfastlars",
    }
    cfg = settle(["--lr", "4.5"], env)
    assert cfg.profile == "full" and cfg.image_size == 224 and cfg.width == 64
    assert (cfg.batch_size, cfg.lr, cfg.epochs, cfg.weight_decay, cfg.seed) == (
        204,
        4.5,
        37,
        5e-5,
        42,
    )
    assert cfg.data_dir == Path("/data")
    assert cfg.target_accuracy == 0.759


def test_profile_from_environment_and_flag():
    env = {"HPCREPRO_DATA_DIR": "/d", "HPCREPRO_WORKLOAD_PROFILE": "tiny"}
    assert settle([], env).image_size == 32
    assert settle(["--profile", "full"], env).image_size == 224
    with pytest.raises(UserError, match="HPCREPRO_WORKLOAD_PROFILE='huge'"):
        settle([], {"HPCREPRO_DATA_DIR": "/d", "HPCREPRO_WORKLOAD_PROFILE": "huge"})


def test_evaluation_epochs_follow_nvidia_offset_and_period():
    cfg = settle(["--data-dir", "/d"], {"NUMEPOCHS": "37", "EVAL_OFFSET": "2", "EVAL_PERIOD": "4"})
    assert cfg.eval_epochs() == [3, 7, 11, 15, 19, 23, 27, 31, 35]
    cfg = settle(["--data-dir", "/d"], {"NUMEPOCHS": "78", "EVAL_OFFSET": "0"})
    assert cfg.eval_epochs()[:2] == [1, 5] and cfg.eval_epochs()[-1] == 77


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LR": "fast"}, "LR='fast'"),
        ({"BATCHSIZE": "0"}, "BATCHSIZE must be positive"),
        ({"OPTIMIZER": "sgd"}, "OPTIMIZER='sgd'"),
        ({"NUMEPOCHS": "2", "EVAL_OFFSET": "3"}, "no evaluation falls within NUMEPOCHS=2"),
        ({"LABELSMOOTHING": "1.5"}, "LABELSMOOTHING"),
    ],
)
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        settle([], {"HPCREPRO_DATA_DIR": "/d", **env})


def test_missing_data_folder_says_how_to_give_it():
    with pytest.raises(UserError, match="no data folder") as caught:
        settle([], {})
    assert "HPCREPRO_DATA_DIR" in (caught.value.hint or "")


def test_platform_name_has_nvidia_node_count_prefix():
    assert (
        platform_name({"MLPERF_SUBMISSION_PLATFORM": "Acme H200", "DGXNNODES": "2"}, "x")
        == "2xAcme H200"
    )
    assert (
        platform_name({"MLPERF_SUBMISSION_PLATFORM": "8xNVIDIA DGX H100"}, "x")
        == "8xNVIDIA DGX H100"
    )
    assert platform_name({"DGXSYSTEM": "DGXH100", "SLURM_JOB_NUM_NODES": "4"}, "x") == "4xDGXH100"
    assert platform_name({}, "NVIDIA H200") == "1xNVIDIA H200"


def test_cache_clear_flag():
    assert cache_cleared({"HPCREPRO_CACHE_CLEARED": "1"}) is True
    assert cache_cleared({}) is False
