# A stand-in for the official postgres image, which no registry here can serve: Debian's
# PostgreSQL with the part of that image's interface compose.yaml uses (POSTGRES_PASSWORD,
# POSTGRES_DB, data in /var/lib/postgresql/data, port 5432, pg_isready).
ARG BASE
FROM ${BASE}
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data && chown postgres /var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/
USER postgres
# Fast shutdown, as the official image asks for: SIGTERM would wait for every client.
STOPSIGNAL SIGINT
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]
