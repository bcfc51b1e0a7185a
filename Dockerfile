ARG BASE=python:3.12-slim
FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
RUN python3 -m pip install --no-cache-dir . && useradd --create-home --uid 10001 xquik
USER xquik
WORKDIR /home/xquik
ENTRYPOINT ["xquik-disconnect"]
CMD ["--help"]
