"""Ziggurat on KServe: the ``ServingRuntime`` and an example ``InferenceService`` of
``deploy/kserve/``, built from the kserve SDK's models, plus a strict reader for their YAML.

KServe mounts an InferenceService's ``storageUri`` at ``/mnt/models``; the runtime's container
serves that folder as its model repository (``<name>.onnx`` or ``<name>/<version>/model.onnx``)
over the V2 protocol on port 8080, ready when ``/v2/health/ready`` answers 200.

``python -m ziggurat.integrations.kserve --image REGISTRY/ziggurat:TAG [--out deploy/kserve]``
writes both manifests. Needs the ``kserve`` extra (``pip install 'ziggurat[kserve]'``).

The SDK's own deserializer cannot read its YAML back, and KServe ships no CRD schemas to
validate against, so :func:`from_dict` is a strict reader over the SDK's ``openapi_types``:
an unknown or misspelled key fails instead of being dropped.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path
from typing import Any

import ziggurat

RUNTIME_NAME = "ziggurat"
MODEL_MOUNT = "/mnt/models"  # where KServe's storage initializer puts the storageUri's files
PORT = 8080
DEFAULT_IMAGE = f"ziggurat:{ziggurat.__version__}"
EXAMPLE_STORAGE_URI = "pvc://ziggurat-models/repository"
# Leaf types of the SDKs' openapi_types (the Kubernetes client writes quantities and times as
# strings in YAML); "object" is int-or-string and free-form fields.
_PRIMITIVES = {
    "str": str,
    "int": int,
    "bool": bool,
    "float": (int, float),
    "object": object,
    "datetime": str,
    "V1Time": str,
    "bytes": str,
    "ResourceQuantity": (str, int, float),
}


def serving_runtime(image: str = DEFAULT_IMAGE) -> Any:
    """The ``ServingRuntime`` named ``ziggurat``: V2 protocol, ONNX models, ``image``."""
    from kserve import models as km
    from kubernetes import client as k8s

    probe = k8s.V1HTTPGetAction(path="/v2/health/ready", port=PORT)
    container = k8s.V1Container(
        name="kserve-container",
        image=image,
        # The image's entry point is `ziggurat serve`; KServe's model mount is the repository.
        args=["--model-repository", MODEL_MOUNT, "--host", "0.0.0.0", "--port", str(PORT)],
        ports=[k8s.V1ContainerPort(container_port=PORT, name="http1", protocol="TCP")],
        readiness_probe=k8s.V1Probe(http_get=probe, period_seconds=5, failure_threshold=3),
        liveness_probe=k8s.V1Probe(
            http_get=k8s.V1HTTPGetAction(path="/v2/health/live", port=PORT),
            period_seconds=10,
            failure_threshold=3,
        ),
        resources=k8s.V1ResourceRequirements(
            requests={"cpu": "1", "memory": "1Gi"}, limits={"cpu": "2", "memory": "2Gi"}
        ),
        security_context=k8s.V1SecurityContext(
            run_as_non_root=True,
            allow_privilege_escalation=False,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
        ),
    )
    spec = km.V1alpha1ServingRuntimeSpec(
        supported_model_formats=[
            km.V1alpha1SupportedModelFormat(name="onnx", version="1", auto_select=True, priority=2)
        ],
        protocol_versions=["v2"],
        multi_model=False,
        # Each pod's /metrics (per replica); KServe's Prometheus annotations point at it.
        annotations={
            "prometheus.kserve.io/port": str(PORT),
            "prometheus.kserve.io/path": "/metrics",
        },
        containers=[container],
    )
    return km.V1alpha1ServingRuntime(
        api_version="serving.kserve.io/v1alpha1",
        kind="ServingRuntime",
        metadata=k8s.V1ObjectMeta(name=RUNTIME_NAME),
        spec=spec,
    )


def inference_service(
    name: str = "ziggurat-example", storage_uri: str = EXAMPLE_STORAGE_URI
) -> Any:
    """An ``InferenceService`` serving the repository at ``storage_uri`` with the runtime."""
    from kserve import models as km
    from kubernetes import client as k8s

    model = km.V1beta1ModelSpec(
        name="kserve-container",  # the SDK's default is "", which KServe would reject
        model_format=km.V1beta1ModelFormat(name="onnx"),
        protocol_version="v2",
        runtime=RUNTIME_NAME,
        storage_uri=storage_uri,
    )
    return km.V1beta1InferenceService(
        api_version="serving.kserve.io/v1beta1",
        kind="InferenceService",
        metadata=k8s.V1ObjectMeta(name=name),
        spec=km.V1beta1InferenceServiceSpec(
            predictor=km.V1beta1PredictorSpec(model=model, min_replicas=1, max_replicas=4)
        ),
    )


def to_dict(obj: Any) -> Any:
    """A model object as the plain dict Kubernetes reads (camelCase keys, no None values), by
    the kserve SDK's serializer (the Kubernetes client's one does not know kserve's models)."""
    from kserve.api_client import ApiClient

    return ApiClient().sanitize_for_serialization(obj)


def to_yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(to_dict(obj), sort_keys=False)


def _model_class(name: str) -> type:
    from kserve import models as km
    from kubernetes.client import models as k8s

    for module in (km, k8s):
        if hasattr(module, name):
            return getattr(module, name)
    raise TypeError(f"no model class {name!r} in kserve.models or kubernetes.client.models")


def from_dict(data: Any, type_name: str, where: str = "") -> Any:
    """``data`` (parsed YAML/JSON) as an SDK object of ``type_name``, strictly: a key the model
    does not declare, or a value of the wrong type, raises ValueError naming its path."""
    where = where or type_name
    # kserve.models write list[X] and dict(str, X); kubernetes >= 35 List[X] and Dict[str, X].
    if m := re.fullmatch(r"[lL]ist\[(.+)\]", type_name):
        if not isinstance(data, list):
            raise ValueError(f"{where}: expected a list, got {type(data).__name__}")
        return [from_dict(v, m[1], f"{where}[{i}]") for i, v in enumerate(data)]
    if m := re.fullmatch(r"dict\(\w+, (.+)\)|Dict\[\w+, (.+)\]", type_name):
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
        value_type = m[1] or m[2]
        return {k: from_dict(v, value_type, f"{where}.{k}") for k, v in data.items()}
    if type_name in _PRIMITIVES:
        ok = _PRIMITIVES[type_name]
        if not isinstance(data, ok) or (type_name in ("int", "float") and isinstance(data, bool)):
            raise ValueError(f"{where}: expected {type_name}, got {data!r}")
        return data
    cls = _model_class(type_name)
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a {type_name} mapping, got {type(data).__name__}")
    by_key = {key: attr for attr, key in cls.attribute_map.items()}
    kwargs = {}
    for key, value in data.items():
        if key not in by_key:
            near = [k for k in by_key if k.lower() == key.lower()]
            near = near or difflib.get_close_matches(key, by_key, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ValueError(f"{where}: unknown key {key!r} for {type_name}{hint}")
        attr = by_key[key]
        kwargs[attr] = from_dict(value, cls.openapi_types[attr], f"{where}.{key}")
    return cls(**kwargs)


def read_manifest(text: str) -> Any:
    """A ServingRuntime or InferenceService YAML document, read strictly (see from_dict)."""
    import yaml

    data = yaml.safe_load(text)
    kinds = {
        "ServingRuntime": "V1alpha1ServingRuntime",
        "InferenceService": "V1beta1InferenceService",
    }
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in kinds:
        raise ValueError(f"expected kind ServingRuntime or InferenceService, got {kind!r}")
    return from_dict(data, kinds[kind])


HEADER = (
    "# Generated by `python -m ziggurat.integrations.kserve --image IMAGE` (docs/deploy.md);\n"
    "# tests/integrations/test_kserve_manifests.py checks it against the kserve SDK's models.\n"
)


def main(argv: list[str] | None = None) -> int:
    """Write deploy/kserve's manifests for ``--image``."""
    p = argparse.ArgumentParser(
        prog="python -m ziggurat.integrations.kserve", description=main.__doc__
    )
    p.add_argument("--image", default=DEFAULT_IMAGE, help="the pushed Ziggurat image")
    p.add_argument("--out", default="deploy/kserve", help="folder to write the YAML files to")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "servingruntime.yaml").write_text(HEADER + to_yaml(serving_runtime(args.image)))
    (out / "inferenceservice.yaml").write_text(HEADER + to_yaml(inference_service()))
    print(f"wrote {out}/servingruntime.yaml and {out}/inferenceservice.yaml", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
