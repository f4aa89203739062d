# chainloom: one image for every process of the distributed mode (api, relay, projector).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 CHAINLOOM_DATA_DIR=/data
COPY pyproject.toml README.md ./
COPY domain ./domain
COPY commands ./commands
COPY projections ./projections
COPY queries ./queries
COPY web ./web
COPY infra ./infra
RUN pip install --no-cache-dir . && useradd --system --home /data chainloom && mkdir -p /data && chown chainloom /data
USER chainloom
EXPOSE 8081
CMD ["chainloom", "serve"]
