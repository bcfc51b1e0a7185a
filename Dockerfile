# xquik-disconnect: a small, non-root image. The API key comes from the environment
# (XQUIK_API_KEY) or a mounted file (--api-key-file); nothing secret is baked in.
ARG BASE=python:3.12-slim

FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY worker ./worker
# Wheels built ahead (scripts/container-check does, for machines without PyPI in the build)
# are used when present; otherwise the pinned versions come from PyPI.
COPY requirements.lock build/wheel[s] /wheels/
RUN python3 -m venv /opt/venv \
 && if ls /wheels/*.whl >/dev/null 2>&1; then \
      /opt/venv/bin/pip install --no-index --find-links /wheels -r requirements.lock \
        xquik-disconnect-worker; \
    else \
      /opt/venv/bin/pip install -r requirements.lock /src; \
    fi

FROM ${BASE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="xquik-disconnect" \
      org.opencontainers.image.description="Disconnect many X accounts from Xquik within the API's rate limit" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://github.com/example/xquik-disconnect-worker"
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /opt/venv /opt/venv
RUN useradd --create-home --uid 10001 --user-group xquik
USER 10001
WORKDIR /home/xquik
ENTRYPOINT ["xquik-disconnect"]
CMD ["--help"]
