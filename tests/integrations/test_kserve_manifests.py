"""deploy/kserve/: the committed manifests are what the kserve SDK's models build, they read
back strictly (unknown or misspelled keys and wrong types fail), and the runtime's container
arguments are ones ``ziggurat serve`` accepts, mapping KServe's model mount to the repository."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import pytest
import yaml

from ziggurat.integrations import kserve as zk
from ziggurat.server.cli import add_parser, config_from_args

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kserve"
FILES = {"servingruntime.yaml": zk.serving_runtime, "inferenceservice.yaml": zk.inference_service}


@pytest.mark.parametrize("name", sorted(FILES))
def test_committed_manifest_is_what_the_sdk_builds(name):
    text = (DEPLOY / name).read_text()
    assert text == zk.HEADER + zk.to_yaml(FILES[name]()), (
        f"deploy/kserve/{name} is stale: run `python -m ziggurat.integrations.kserve`"
    )


@pytest.mark.parametrize("name", sorted(FILES))
def test_manifest_round_trips_strictly(name):
    text = (DEPLOY / name).read_text()
    obj = zk.read_manifest(text)
    assert type(obj) is type(FILES[name]())
    assert zk.to_dict(obj) == yaml.safe_load(text)


def test_unknown_misspelled_and_mistyped_keys_fail():
    good = yaml.safe_load((DEPLOY / "servingruntime.yaml").read_text())
    bad = copy.deepcopy(good)
    c = bad["spec"]["containers"][0]
    c["readinessprobe"] = c.pop("readinessProbe")
    with pytest.raises(
        ValueError, match=r"containers\[0\]: unknown key 'readinessprobe'.*'readinessProbe'"
    ):
        zk.read_manifest(yaml.safe_dump(bad))
    bad = copy.deepcopy(good)
    bad["spec"]["supportedModelFormats"][0]["autoselect"] = True
    with pytest.raises(ValueError, match="unknown key 'autoselect'"):
        zk.read_manifest(yaml.safe_dump(bad))
    bad = copy.deepcopy(good)
    bad["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    with pytest.raises(ValueError, match="containerPort: expected int"):
        zk.read_manifest(yaml.safe_dump(bad))
    isvc = yaml.safe_load((DEPLOY / "inferenceservice.yaml").read_text())
    isvc["spec"]["predictor"]["model"]["storageURI"] = isvc["spec"]["predictor"]["model"].pop(
        "storageUri"
    )
    with pytest.raises(ValueError, match="did you mean 'storageUri'"):
        zk.read_manifest(yaml.safe_dump(isvc))


def test_runtime_serves_kserve_mount_over_v2():
    rt = yaml.safe_load((DEPLOY / "servingruntime.yaml").read_text())
    spec = rt["spec"]
    assert spec["protocolVersions"] == ["v2"]
    assert [f["name"] for f in spec["supportedModelFormats"]] == ["onnx"]
    (container,) = spec["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert container["ports"][0]["containerPort"] == 8080
    # The arguments go to `ziggurat serve` (the image's entry point): parse them as it does.
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    cfg = config_from_args(parser.parse_args(["serve", *container["args"]]))
    assert cfg.model_repository == zk.MODEL_MOUNT == "/mnt/models"
    assert cfg.server_port == 8080
    isvc = yaml.safe_load((DEPLOY / "inferenceservice.yaml").read_text())
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == rt["metadata"]["name"]
    assert model["modelFormat"]["name"] in [f["name"] for f in spec["supportedModelFormats"]]
    assert model["protocolVersion"] == "v2"
