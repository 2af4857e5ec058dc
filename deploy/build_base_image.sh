#!/usr/bin/env bash
# Builds the local base image the Dockerfiles start from (no container registry is needed or reachable here):
# a minimal Debian bookworm root made with debootstrap from Debian's package archive, imported into podman
# (or docker) as localhost/ct2dwi-base:bookworm.
#   sudo deploy/build_base_image.sh [podman|docker]
set -euo pipefail
engine=${1:-podman}
command -v debootstrap >/dev/null || { echo "debootstrap is needed (apt-get install debootstrap)" >&2; exit 2; }
command -v "$engine" >/dev/null || { echo "$engine is needed (apt-get install $engine)" >&2; exit 2; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates,curl,bash bookworm "$root"
tar -C "$root" -c . | "$engine" import - localhost/ct2dwi-base:bookworm
echo "built localhost/ct2dwi-base:bookworm"
