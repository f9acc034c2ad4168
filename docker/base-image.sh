#!/usr/bin/env bash
# Make a local Debian bookworm base image for docker/Dockerfile and docker/orthanc.Dockerfile when no
# container registry is reachable: mmdebstrap builds the root filesystem from Debian packages (the
# host's apt proxy and mirror settings apply) and `docker import` turns it into an image.
# The merged-usr hook sets up merged /usr without the usrmerge package (and the perl it pulls in).
#   docker/base-image.sh [TAG]          (default cxr-base:bookworm; about a minute)
# Then build with --build-arg BASE_IMAGE=TAG (README, "Build offline").
set -euo pipefail
TAG="${1:-cxr-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --aptopt='APT::Install-Recommends "false"' --aptopt='Acquire::Languages "none"' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    bookworm - "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
    "deb $SECURITY bookworm-security main" \
  | docker import --change 'CMD ["/bin/bash"]' --message "mmdebstrap bookworm minbase + python3" - "$TAG"
