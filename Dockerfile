# Ziggurat's model server image: `docker build -t ziggurat:0.1.0 .` (add `--build-arg
# EXTRAS=ray` for `--replicas`), then
#   docker run -p 8080:8080 -v /path/to/repository:/models:ro ziggurat:0.1.0
# serves every model of the mounted repository (<name>.onnx or <name>/<version>/model.onnx) on
# port 8080: /v2 (KServe/Triton clients), /api/v1, /metrics, the dashboard at /.
# Arguments after the image name go to `ziggurat serve` (see `--help`). docs/deploy.md.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ARG EXTRAS=""
# libgomp1: OpenMP runtime of the oneDNN library Ziggurat loads for GEMMs and convolutions.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home --home-dir /home/ziggurat --shell /usr/sbin/nologin ziggurat \
    && mkdir /models && chown ziggurat /models
COPY --from=build /wheels /wheels
RUN whl="$(ls /wheels/*.whl)" \
    && pip install --no-cache-dir "${whl}${EXTRAS:+[$EXTRAS]}" \
    && rm -rf /wheels

# In a container the server must listen on all of the container's interfaces to be reachable
# through the published port; outside containers the default stays 127.0.0.1.
ENV ZIGGURAT_HOST=0.0.0.0 \
    ZIGGURAT_SERVER_PORT=8080 \
    ZIGGURAT_MODEL_REPOSITORY=/models \
    PYTHONUNBUFFERED=1
USER 10001
WORKDIR /home/ziggurat
VOLUME ["/models"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('ZIGGURAT_SERVER_PORT', '8080'), timeout=2)"]
ENTRYPOINT ["ziggurat", "serve"]
