# xquik-disconnect: a small, non-root image. The API key comes from a mounted file
# (--api-key-file) or the environment (XQUIK_API_KEY); nothing secret is baked in.
#
# The base image is pinned by digest (a tag can be moved to another image). To bump it:
#   docker buildx imagetools inspect python:3.12-slim-bookworm   # the index's Digest
# and replace both the tag and the digest below; CI builds with the new one before it lands.
ARG BASE=docker.io/library/python:3.12.7-slim-bookworm@sha256:032c52613401895aa3d418a4c563d2d05f993bc3ecc065c8f4e2280978acd249

FROM ${BASE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY worker ./worker
# Wheels built ahead (scripts/container-check does, for machines without PyPI in the build)
# are checked all the same: every dependency against the lock's hashes, the project's own
# wheel against the SHA-256 the build passes. Otherwise everything comes from PyPI, hashed.
COPY requirements.lock build/wheel[s] /wheels/
ARG WHEEL_SHA256=""
RUN python3 -m venv /opt/venv \
 && if ls /wheels/*.whl >/dev/null 2>&1; then \
      /opt/venv/bin/pip install --no-index --find-links /wheels --require-hashes \
        -r requirements.lock \
      && wheel=$(ls /wheels/xquik_disconnect_worker-*.whl) \
      && echo "${WHEEL_SHA256}  ${wheel}" | sha256sum -c - \
      && /opt/venv/bin/pip install --no-index --no-deps "${wheel}"; \
    else \
      /opt/venv/bin/pip install --require-hashes -r requirements.lock \
      && /opt/venv/bin/pip install --no-deps /src; \
    fi

FROM ${BASE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="xquik-disconnect" \
      org.opencontainers.image.description="Disconnect many X accounts from Xquik within the API's rate limit" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="MIT"
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /opt/venv /opt/venv
RUN useradd --create-home --uid 10001 --user-group xquik
USER 10001
WORKDIR /home/xquik
ENTRYPOINT ["xquik-disconnect"]
CMD ["--help"]
