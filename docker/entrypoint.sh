#!/bin/sh
# Start cxr-gateway with the container's arguments (default: serve --config /etc/cxr-gateway/gateway.yaml).
# A Docker secret named after a setting's environment variable, e.g. /run/secrets/CXR_GATEWAY__WEB__AUTH_TOKEN,
# becomes that variable (trailing newline dropped) and wins over the same variable in the environment,
# so secrets need not sit in the environment or in an image layer.
set -eu
for secret in /run/secrets/CXR_GATEWAY__*; do
    [ -f "$secret" ] || continue
    name=${secret##*/}
    case $name in
        *[!A-Za-z0-9_]*) echo "ignoring secret $name: not a variable name" >&2; continue ;;
    esac
    value=$(cat "$secret")
    export "$name=$value"
done
exec cxr-gateway "$@"
