# Orthanc from Debian's package, as the PACS of docker/compose.yaml (the same base as the gateway's
# image, so it builds offline too). Its configuration (orthanc.json) and the routing script
# (route-cxr.lua) are mounted by compose, not baked in. Build:
#   docker build -f docker/orthanc.Dockerfile -t cxr-orthanc:latest docker
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

# Debian's default configuration files are removed: Orthanc reads every *.json in /etc/orthanc/
# and refuses a key set twice, so only the mounted orthanc.json may be there.
RUN --mount=type=secret,id=ca \
    set -eu; \
    ca=""; if [ -s /run/secrets/ca ]; then ca="-o Acquire::https::CaInfo=/run/secrets/ca"; fi; \
    apt-get $ca update -qq; \
    DEBIAN_FRONTEND=noninteractive apt-get $ca install -y -qq --no-install-recommends orthanc curl >/dev/null; \
    rm -rf /var/lib/apt/lists/* /etc/orthanc/*.json; \
    install -d -o orthanc -g orthanc /var/lib/orthanc/db

USER orthanc
VOLUME ["/var/lib/orthanc/db"]
# 4242: DICOM; 8042: REST API and Orthanc Explorer
EXPOSE 4242 8042
# Alive = the REST server answers (401 without credentials counts: no password in the check).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD curl -sS -o /dev/null http://127.0.0.1:8042/system || exit 1
ENTRYPOINT ["Orthanc"]
CMD ["/etc/orthanc/"]
