# The reelstream image used by docker-compose.kafka.yml (worker, archive, gateway and the one-shot init).
FROM python:3.11-slim
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 REELSTREAM_DATA_PATH=/app/data/ml-latest-small
# CPU build of torch: the default index would pull a multi-GB CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY reelstream reelstream
COPY bootstrap bootstrap
COPY models models
COPY schemas schemas
COPY streams streams
COPY gateway gateway
COPY monitoring monitoring
COPY data data
RUN pip install .
# Not root: the var volume (REELSTREAM_VAR_DIR in docker-compose.kafka.yml) is created owned by this user.
RUN useradd --system --uid 10001 --no-create-home reelstream \
    && mkdir -p /var/lib/reelstream && chown reelstream /var/lib/reelstream
USER reelstream
