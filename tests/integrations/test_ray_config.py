"""The Ray Serve application without a cluster: deploy/ray/serve_config.yaml is a valid Serve
config whose import path builds the application, builder arguments parse as ``serve run``
passes them (strings), and the scale options become Serve's deployment options."""

from __future__ import annotations

import argparse
import importlib
import socket
from pathlib import Path

import pytest
import yaml
from ray.serve import Application
from ray.serve.schema import ServeDeploySchema

from ziggurat.config import Config
from ziggurat.errors import ConfigError
from ziggurat.integrations import ray_serve as rs
from ziggurat.integrations import serve_flags
from ziggurat.server.cli import add_parser

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "ray" / "serve_config.yaml"


def test_serve_config_file_is_valid_and_builds():
    data = yaml.safe_load(CONFIG.read_text())
    schema = ServeDeploySchema.model_validate(data)
    assert schema.http_options.host == "127.0.0.1"  # loopback unless the user says otherwise
    (app,) = schema.applications
    module, _, attr = app.import_path.partition(":")
    builder = getattr(importlib.import_module(module), attr)
    assert builder is rs.build
    assert isinstance(builder(app.args), Application)
    cfg, scale = rs.split_args(app.args)
    assert cfg.model_repository == "/models" and cfg.max_batch_size == 8
    assert scale == rs.ScaleOptions(num_replicas=2, num_cpus_per_replica=1.0)


def test_serve_run_string_arguments_and_autoscaling():
    args = {"model_repository": "/m", "num_replicas": "3", "min_replicas": "1",
            "max_replicas": "4", "target_ongoing_requests": "5", "max_batch_size": "8"}  # fmt: skip
    cfg, scale = rs.split_args(args)
    assert (cfg.model_repository, cfg.max_batch_size) == ("/m", 8)
    opts = scale.deployment_options(cfg)
    assert "num_replicas" not in opts  # Serve refuses a fixed count next to autoscaling
    assert opts["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4,
                                          "initial_replicas": 3, "target_ongoing_requests": 5.0}  # fmt: skip
    assert opts["ray_actor_options"] == {"num_cpus": 1.0}
    assert opts["logging_config"]["enable_access_log"] is False  # Ziggurat writes its own
    fixed = rs.ScaleOptions(num_replicas=2).deployment_options(Config())
    assert fixed["num_replicas"] == 2 and "autoscaling_config" not in fixed
    assert isinstance(rs.build(args), Application)


def test_bad_builder_arguments_say_what():
    with pytest.raises(ConfigError, match="model_repository"):
        rs.build({"model_repositry": "/m"})
    with pytest.raises(ConfigError, match="num_replicas must be a number, got 'two'"):
        rs.build({"model_repository": "/m", "num_replicas": "two"})
    with pytest.raises(ConfigError, match="no model to serve"):
        rs.build({"num_replicas": 2})
    with pytest.raises(ConfigError, match=r"min_replicas \(5\) is larger than max_replicas \(2\)"):
        rs.ScaleOptions(min_replicas=5, max_replicas=2)
    with pytest.raises(ConfigError, match="num_cpus_per_replica must be > 0"):
        rs.ScaleOptions(num_cpus_per_replica=0)


def test_replica_threads_follow_its_cpus():
    assert rs.replica_config(Config(), rs.ScaleOptions(num_cpus_per_replica=2)).cpu_threads == 2
    assert rs.replica_config(Config(), rs.ScaleOptions(num_cpus_per_replica=0.5)).cpu_threads == 1
    explicit = Config(cpu_threads=3)
    assert rs.replica_config(explicit, rs.ScaleOptions()).cpu_threads == 3


def test_replica_paths_are_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = rs.replica_config(Config(model_repository="repo", models=("a.onnx",)), rs.ScaleOptions())
    assert cfg.model_repository == str(tmp_path / "repo")
    assert cfg.models == (str(tmp_path / "a.onnx"),)


def parse_serve(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


def test_serve_flags_choose_ray():
    assert not serve_flags.wanted(parse_serve("m.onnx"))
    assert serve_flags.wanted(parse_serve("m.onnx", "--replicas", "1"))  # one replica behind Ray
    args = parse_serve("--replicas", "2", "--num-cpus-per-replica", "0.5")
    assert serve_flags.wanted(args)
    assert rs.scale_from_args(args) == rs.ScaleOptions(num_replicas=2, num_cpus_per_replica=0.5)
    args = parse_serve(
        "--min-replicas", "1", "--max-replicas", "3", "--target-ongoing-requests", "4"
    )
    assert serve_flags.wanted(args) and rs.scale_from_args(args).autoscaling
    assert serve_flags.wanted(parse_serve("--ray-address", "ray://head:10001"))


def test_taken_port_fails_before_ray_starts(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        cfg = Config(host="127.0.0.1", server_port=s.getsockname()[1])
        assert rs.serve_cluster(cfg, rs.ScaleOptions(num_replicas=2)) == 2
    assert f"cannot listen on 127.0.0.1:{cfg.server_port}" in capsys.readouterr().err


def test_long_temp_folder_fails_before_ray_starts(monkeypatch, capsys):
    # Set what _local_ray_env would set, so the test process's environment is restored after.
    for key in ("RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_USAGE_STATS_ENABLED"):
        monkeypatch.setenv(key, "disabled" if key == "RAY_AUTH_MODE" else "0")
    monkeypatch.setenv(rs.TEMP_DIR_ENV, "/tmp/" + "x" * 60)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert rs.serve_cluster(Config(server_port=port), rs.ScaleOptions(num_replicas=2)) == 2
    assert "too long for Ray's Unix sockets" in capsys.readouterr().err
