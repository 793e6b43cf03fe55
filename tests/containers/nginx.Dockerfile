# A stand-in for the official nginx image, which no registry here can serve: Debian's
# nginx reading the server blocks in /etc/nginx/conf.d/ as that image does.
ARG BASE
FROM ${BASE}
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light \
    && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/default
CMD ["nginx", "-g", "daemon off;"]
