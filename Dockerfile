# syntax=docker/dockerfile:1
# One image for all four services; the command picks the service, exactly as `make run` starts them:
#   python -m services.intake | services.escalation | services.compensation | services.followup
# and the deployment's one-shot tasks: python -m services.common.provision topics|roles|migrate|wait.
# tests/deploy checks that these commands, deploy/compose and deploy/k8s agree with services/__main__.py.
#
#   docker build -t service-recovery:dev .
#   docker run --rm service-recovery:dev python -m services.intake   (with KAFKA_* and DATABASE_URL set)

# ---------------------------------------------------------------------------------------------- build
FROM python:3.11.14-slim-trixie AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY requirements.lock ./

# The runtime dependencies only, at exactly the versions requirements.lock pins (the lock also holds the
# test and lint tools, which stay out of the image). tests/deploy checks this list covers every
# third-party import of services/.
# hadolint ignore=DL3013
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-compile --constraint requirements.lock \
        faust-streaming \
        aiokafka \
        asyncpg \
        grpcio \
        grpcio-health-checking \
        grpcio-reflection \
        grpcio-status \
        protobuf \
        googleapis-common-protos \
        prometheus-client \
        "pyjwt[crypto]" \
        babel \
        opentelemetry-api \
        opentelemetry-sdk \
        opentelemetry-exporter-otlp-proto-grpc \
        opentelemetry-instrumentation-grpc \
        opentelemetry-instrumentation-asyncpg \
    && printf '%s\n%s\n' /app /app/gen > /opt/venv/lib/python3.11/site-packages/service_recovery.pth

# The protobuf code is generated here, as `make proto` does locally; grpcio-tools stays in this stage.
# hadolint ignore=DL3013
RUN pip install --no-compile --constraint requirements.lock grpcio-tools
COPY proto/ proto/
COPY scripts/gen_proto.py scripts/
RUN python scripts/gen_proto.py

# -------------------------------------------------------------------------------------------- runtime
FROM python:3.11.14-slim-trixie AS runtime

# Inside a container every service listens on the same ports; DATA_DIR holds faust's scratch files only.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GRPC_HOST=0.0.0.0 \
    GRPC_PORT=50051 \
    METRICS_HOST=0.0.0.0 \
    METRICS_PORT=9100 \
    DATA_DIR=/var/lib/recovery

RUN groupadd --system --gid 10001 recovery \
    && useradd --system --uid 10001 --gid recovery --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin recovery \
    && install -d -o recovery -g recovery -m 0750 /var/lib/recovery

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --from=build /src/gen/ gen/
COPY services/ services/
# Compiled now, so a read-only root file system costs nothing at start.
RUN python -m compileall -q /app /opt/venv

USER 10001:10001
EXPOSE 50051 9100

# gRPC health (grpc.health.v1) on GRPC_PORT: SERVING once started and while the database answers.
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-m", "services.common.healthcheck"]

# No default service: compose and Kubernetes name one, e.g. ["python", "-m", "services.intake"].
CMD ["python", "-c", "raise SystemExit('name a service: python -m services.<intake|escalation|compensation|followup>')"]
