# syntax=docker/dockerfile:1
#
# The hpo image: the `hpo` CLI (workers, `hpo create`, ...) and optuna-dashboard.
#
# Base: python:3.11-slim rather than a pytorch/pytorch CUDA image. On Linux x86_64 the
# default torch wheel from PyPI bundles the CUDA runtime and cuDNN (as nvidia-* wheels), so
# the image needs only the host's NVIDIA driver, which the NVIDIA Container Toolkit mounts
# in at run time. The pytorch/pytorch images pin their own Python and torch (conda), which
# would then have to be kept in step with pyproject.toml; here pip resolves pyproject's
# ranges, on the Python version the project targets.
#
#   docker build -t hpo .                                                   # CUDA torch
#   docker build -t hpo --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
#
# Nothing secret goes in: the storage URL arrives at run time through HPO_STORAGE.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# tini runs as PID 1 and hpo as its child: a trial process takes a parent PID of 1 to mean
# that its worker died and exits at once, so hpo itself must never be PID 1. tini also
# forwards SIGTERM to hpo (which then lets running trials finish) and reaps orphans.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# Optional: torch from another index (the CPU-only wheels, say) before pip sees pyproject.
ARG TORCH_INDEX_URL=""
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --index-url "$TORCH_INDEX_URL" "torch>=2.4,<3"; \
    fi

# Dependencies first, from pyproject.toml and empty packages, so that a code change does
# not reinstall torch; then the real code, without touching the dependencies.
WORKDIR /src
COPY pyproject.toml ./
RUN mkdir hpo \
    && touch hpo/__init__.py \
    && pip install . \
    && rm -rf build ./*.egg-info
COPY hpo/ hpo/
RUN pip install --no-deps . && rm -rf /src

# An unprivileged user. /app is the working directory, so a spec's default checkpoint_dir
# ("checkpoints") is /app/checkpoints; creating it here makes a named volume mounted there
# start out owned by this user. Match USER_ID to the owner of a bind-mounted shared folder.
ARG USER_ID=1000
RUN useradd --create-home --uid "$USER_ID" --user-group hpo \
    && mkdir -p /app/checkpoints \
    && chown -R hpo:hpo /app
WORKDIR /app
USER hpo

ENTRYPOINT ["/usr/bin/tini", "--", "hpo"]
CMD ["--help"]
