# The qgjob server. `docker run -p 8000:8000 qgjob-backend` runs `qgjobd up`: embedded
# PostgreSQL in the /data volume, the API on 0.0.0.0:8000 in local mode (no tokens),
# the projector and simulated devices. With QGJOB_DATABASE_URL it uses that server, and
# one role alone runs as e.g. `docker run qgjob-backend api` (docs/deploy.md).
ARG BASE=python:3.12-slim

# Wheels to install instead of reaching the package index: none, unless the build is
# given `--build-context wheels=DIR` holding qgjob's wheel and its dependencies.
FROM scratch AS wheels

FROM ${BASE} AS build
COPY --from=wheels / /wheels/
COPY . /src
RUN python3 -m venv /opt/qgjob \
    && if [ -z "$(ls -A /wheels)" ]; then \
        /opt/qgjob/bin/pip install --no-cache-dir "/src[server]"; \
    else \
        /opt/qgjob/bin/pip install --no-cache-dir --no-index --find-links /wheels "qgjob[server]"; \
    fi

FROM ${BASE}
RUN groupadd --system --gid 10001 qgjob \
    && useradd --system --uid 10001 --gid qgjob --create-home qgjob \
    && mkdir /data && chown qgjob:qgjob /data
COPY --from=build /opt/qgjob /opt/qgjob
ENV PATH=/opt/qgjob/bin:$PATH \
    QGJOB_DATA_DIR=/data \
    QGJOB_HOST=0.0.0.0
USER 10001:10001
WORKDIR /data
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
    CMD ["python3", "-c", "import urllib.request as r; r.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["qgjobd"]
CMD ["up"]
