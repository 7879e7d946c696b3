"""Settings: profile defaults < NVIDIA's environment variables < flags; clear errors."""

from __future__ import annotations

import re
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
        ({"LR": "nan"}, "LR must be a finite number, got nan"),
        ({"LR": "inf"}, "LR must be a finite number, got inf"),
        ({"LR": "-1"}, "LR must be in (0, inf), got -1.0"),
        ({"WD": "nan"}, "WD must be a finite number"),
        ({"WD": "-1e-5"}, "WD must be in [0, inf)"),
        ({"MOM": "nan"}, "MOM must be a finite number"),
        ({"MOM": "1.0"}, "MOM must be in [0, 1)"),
        ({"LARSETA": "nan"}, "LARSETA must be a finite number"),
        ({"LARSETA": "0"}, "LARSETA must be in (0, inf)"),
        ({"LABELSMOOTHING": "nan"}, "LABELSMOOTHING must be a finite number"),
        ({"WARMUP_EPOCHS": "nan"}, "WARMUP_EPOCHS must be a finite number"),
        ({"WARMUP_EPOCHS": "-inf"}, "WARMUP_EPOCHS must be a finite number"),
        ({"WARMUP_EPOCHS": "-1"}, "WARMUP_EPOCHS must be in [0, inf)"),
        ({"WARMUP_EPOCHS": "inf"}, "WARMUP_EPOCHS must be a finite number"),
        ({"HPCREPRO_DALI_PIPELINES": "0"}, "HPCREPRO_DALI_PIPELINES (--dali-pipelines) must be"),
        ({"HPCREPRO_DALI_PIPELINES": "two"}, "HPCREPRO_DALI_PIPELINES='two' is not a valid int"),
    ],
)
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(UserError, match=re.escape(message)):
        settle([], {"HPCREPRO_DATA_DIR": "/d", **env})


def test_a_smoke_run_shorter_than_its_warmup_is_allowed():
    """One epoch of the full profile (WARMUP_EPOCHS=2) is how the GPU check times a node."""
    config = settle([], {"HPCREPRO_DATA_DIR": "/d", "NUMEPOCHS": "1", "WARMUP_EPOCHS": "2",
                         "EVAL_OFFSET": "0", "EVAL_PERIOD": "1"})
    assert (config.epochs, config.warmup_epochs) == (1, 2.0)


def test_a_flag_value_is_checked_like_its_variable():
    with pytest.raises(UserError, match="--target-accuracy must be a finite number"):
        settle(["--target-accuracy", "nan"], {"HPCREPRO_DATA_DIR": "/d"})
    with pytest.raises(UserError, match="LR must be a finite number") as caught:
        settle(["--lr", "inf"], {"HPCREPRO_DATA_DIR": "/d", "HPCREPRO_WORKLOAD_PROFILE": "tiny"})
    assert "such as 2.0" in (caught.value.hint or "")
    assert settle(["--target-accuracy", "1.0"], {"HPCREPRO_DATA_DIR": "/d"}).target_accuracy == 1


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


def test_dali_pipelines_default_to_two_and_follow_variable_and_flag():
    assert settle([], {"HPCREPRO_DATA_DIR": "/d"}).dali_pipelines == 2
    env = {"HPCREPRO_DATA_DIR": "/d", "HPCREPRO_DALI_PIPELINES": "3"}
    assert settle([], env).dali_pipelines == 3
    assert settle(["--dali-pipelines", "1"], env).dali_pipelines == 1
    with pytest.raises(UserError, match="must be 1 to 8, got 9"):
        settle(["--dali-pipelines", "9"], env)
