# The reelstream image used by docker-compose.kafka.yml (worker, gateway and the one-shot init).
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
