"""Ziggurat on existing distributed serving systems (optional extras).

- ``ziggurat.integrations.ray_serve``: the server as a Ray Serve application (``ziggurat[ray]``),
  behind ``ziggurat serve --replicas N`` and importable by Ray's own ``serve run``.
- ``ziggurat.integrations.serve_flags``: those ``ziggurat serve`` flags, light to import.
- ``ziggurat.integrations.kserve``: the KServe ``ServingRuntime`` and ``InferenceService`` of
  ``deploy/kserve/`` built from the kserve SDK's models (``ziggurat[kserve]``).

Nothing here is imported by ``import ziggurat``; each module imports its extra on first use.
"""
