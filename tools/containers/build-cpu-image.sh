#!/usr/bin/env bash
# Build the pipeline's CPU image with podman without Docker Hub (`make test-containers`):
#   1. a Debian bookworm base system from Debian's packages (debootstrap), imported as
#      localhost/debian-base:bookworm; its tarball is kept in the cache directory;
#   2. containers/Dockerfile.cpu on that base, torch from PyPI, every wheel kept in the cache
#      directory (WHEELHOUSE); tagged with the name the modules use (ghcr.io/virnucpro/virnucpro:<version>-cpu).
# The cache directory ($VIRNUCPRO_CI_CACHE, else /var/cache/virnucpro-ci as root, else
# ~/.cache/virnucpro-ci) outlives the clone, and podman keeps the build's layers in its own
# storage: a later build downloads nothing and re-runs only the layers whose input changed.
# Usage: tools/containers/build-cpu-image.sh [IMAGE]   (run from anywhere; prints the image name)
set -euo pipefail
cd "$(dirname "$0")/../.."

version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)
image=${1:-ghcr.io/virnucpro/virnucpro:${version}-cpu}
base=localhost/debian-base:bookworm
if [ "$(id -u)" = 0 ]; then default_cache=/var/cache/virnucpro-ci; else default_cache=$HOME/.cache/virnucpro-ci; fi
cache=${VIRNUCPRO_CI_CACHE:-$default_cache}
mkdir -p "$cache/wheels"
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

rootfs_tar=$cache/debian-bookworm-minbase.tar
if ! podman image exists "$base"; then
    if [ ! -s "$rootfs_tar" ]; then
        root=$(mktemp -d "$cache/rootfs.XXXXXX")
        chmod 755 "$root"  # the image's / (mktemp makes it private: no other user could enter it)
        trap 'rm -rf "$root"' EXIT
        echo "debootstrap: Debian bookworm into $root" >&2
        debootstrap --variant=minbase --include=python3,python3-venv,procps bookworm "$root" "$mirror" >"$cache/debootstrap.log"
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
        tar -C "$root" -cf "$rootfs_tar.part" . && mv "$rootfs_tar.part" "$rootfs_tar"
        rm -rf "$root"
        trap - EXIT
    fi
    podman import --quiet "$rootfs_tar" "$base" >/dev/null
fi

# The build trusts the host's certificate authorities (a site behind a TLS-inspecting proxy):
# the bundle is mounted for the build's RUN steps only, the image keeps Debian's.
build_mounts=(-v "$cache/wheels:/wheels")
if [ -s /etc/ssl/certs/ca-certificates.crt ]; then
    build_mounts+=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
fi
podman build --quiet -f containers/Dockerfile.cpu \
    --build-arg BASE_IMAGE="$base" \
    --build-arg TORCH_INDEX=https://pypi.org/simple \
    --build-arg WHEELHOUSE=/wheels \
    "${build_mounts[@]}" -t "$image" . >/dev/null
podman image prune --force >/dev/null  # the previous build of this tag, now untagged
echo "$image"
