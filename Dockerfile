# One image for every supportflow process: the HTTP ingress and the stream workers.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md topology.yaml ./
COPY schemas ./schemas
COPY operators ./operators
COPY connectors ./connectors
COPY pipelines ./pipelines
RUN pip install --no-cache-dir . && useradd --create-home supportflow
USER supportflow
ENV SUPPORTFLOW_TOPOLOGY_FILE=/app/topology.yaml
ENTRYPOINT ["supportflow"]
CMD ["--help"]
