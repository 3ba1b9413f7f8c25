# The OPUS image: web server, Celery worker and beat all run from it (see docker-compose.yml).
FROM python:3.11-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends graphviz \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/opus
COPY setup.cfg pyproject.toml README.md ./
COPY opus ./opus
COPY provenance ./provenance
COPY job_definitions ./job_definitions
RUN pip install --no-cache-dir './[celery,postgres,s3]'
ENV OPUS_DATA_DIR=/data
EXPOSE 8080
CMD ["opus", "serve", "--host", "0.0.0.0", "--port", "8080"]
