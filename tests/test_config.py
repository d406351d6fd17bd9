"""Config: file < environment < flags, validation with clear errors, per-model config.toml."""

from __future__ import annotations

import pytest

from ziggurat.config import Config, ModelConfig, describe_fields, env_name
from ziggurat.errors import ConfigError


def test_defaults_match_design():
    c = Config()
    assert (c.server_port, c.max_connections, c.request_timeout_ms) == (8080, 1000, 30000)
    assert (c.max_model_size_mb, c.model_cache_size, c.gpu_memory_mb) == (1024, 5, 2048)
    assert c.enable_gpu and c.enable_fusion and not c.enable_quantization
    assert c.cpu_threads is None and c.max_body_bytes == 64 * 2**20


def test_file_env_flag_precedence(tmp_path):
    f = tmp_path / "z.toml"
    f.write_text(
        "server_port = 9000\nmax_connections = 10\n[batching]\nmax_batch_size = 4\n"
        'api_keys = ["a"]\n'
    )
    c = Config.load(f, env={})
    assert (c.server_port, c.max_connections, c.max_batch_size, c.api_keys) == (9000, 10, 4, ("a",))
    env = {
        "ZIGGURAT_SERVER_PORT": "9100",
        "ZIGGURAT_API_KEYS": "k1, k2",
        "ZIGGURAT_ENABLE_GPU": "false",
        "ZIGGURAT_CPU_THREADS": "none",
    }
    c = Config.load(f, env=env)
    assert c.server_port == 9100 and c.api_keys == ("k1", "k2") and not c.enable_gpu
    assert c.max_connections == 10 and c.cpu_threads is None
    c = Config.load(f, env=env, overrides={"server_port": 9200, "max_connections": None})
    assert c.server_port == 9200 and c.max_connections == 10


@pytest.mark.parametrize(
    "text,needle",
    [
        ("server_prot = 1", "did you mean 'server_port'"),
        ("server_port = 0", "server_port"),
        ("server_port = 'abc'", "invalid"),
        ("max_batch_size = -1", ">= 0"),
        ("graph_optimization_level = 'max'", "graph_optimization_level"),
        ("cors_origins = ['*']\ncors_allow_credentials = true", "credentials"),
        ("enable_gpu = 'maybe'", "true or false"),
        ("[a]\n[a.b]\nx = 1", "nesting"),
        ("this is not toml", "TOML"),
    ],
)
def test_bad_settings_raise_config_error(tmp_path, text, needle):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        Config.load(f, env={})


def test_missing_file_and_bad_env(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Config.load(tmp_path / "nope.toml", env={})
    with pytest.raises(ConfigError, match="ZIGGURAT_MAX_CONNECTIONS"):
        Config.load(env={"ZIGGURAT_MAX_CONNECTIONS": "lots"})


def test_model_config(tmp_path):
    f = tmp_path / "config.toml"
    f.write_text(
        "max_batch_size = 16\nmax_queue_delay_us = 500\ndevice = 'cpu'\n"
        "[threads]\ncpu_threads = 2\n"
    )
    mc = ModelConfig.read(f)
    eff = mc.resolve(Config(model_concurrency=3))
    assert eff["max_batch_size"] == 16 and eff["cpu_threads"] == 2 and eff["concurrency"] == 3
    f.write_text("device = 'tpu'\n")
    with pytest.raises(ConfigError, match="device"):
        ModelConfig.read(f)
    f.write_text("batch = 3\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        ModelConfig.read(f)


def test_every_field_has_an_env_name_and_serve_flag():
    import argparse

    from ziggurat.server.cli import add_parser, config_from_args

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    help_text = parser._subparsers._group_actions[0].choices["serve"].format_help()
    for name, _, _ in describe_fields():
        if name != "models":
            assert env_name(name) in help_text
    args = parser.parse_args(
        [
            "serve",
            "m.onnx",
            "--port",
            "9",
            "--api-key",
            "a",
            "--api-key",
            "b",
            "--no-access-log",
            "--max-batch-size",
            "8",
        ]
    )
    c = config_from_args(args)
    assert c.server_port == 9 and c.api_keys == ("a", "b") and not c.access_log
    assert c.models == ("m.onnx",) and c.max_batch_size == 8
