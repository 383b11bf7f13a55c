# HAProxy for the replicas in docker/compose*.yaml, from Debian's haproxy package (no image
# from a registry). The configuration is mounted at /usr/local/etc/haproxy/haproxy.cfg.
#   docker build -f docker/haproxy.Dockerfile -t llamawire-haproxy docker
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
USER haproxy
STOPSIGNAL SIGUSR1
ENTRYPOINT ["/usr/sbin/haproxy", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
