#!/usr/bin/env bash
# Podman for `make test-containers` on a Debian CI machine (as root): installs podman, runc and
# debootstrap when missing, and writes /etc/containers/containers.conf with what these machines
# need (the pipeline itself never writes it):
#   - runtime runc, cgroups managed by podman itself (cgroupfs): crun refuses the machine's
#     hybrid cgroup layout and there is no systemd to manage cgroups;
#   - explicit ulimits: podman's default (nofile 1048576) is above the machine's hard limit and
#     raising it is not permitted, so every container start fails with "error setting rlimits".
set -euo pipefail

missing=()
for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap uidmap slirp4netns fuse-overlayfs >/dev/null
fi

conf=/etc/containers/containers.conf
wanted='# Written by virnucpro tools/containers/podman-setup.sh (make test-containers).
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"'
if [ "$(cat "$conf" 2>/dev/null)" != "$wanted" ]; then
    mkdir -p "$(dirname "$conf")"
    if [ -e "$conf" ] && [ ! -e "$conf.before-virnucpro" ]; then
        cp -p "$conf" "$conf.before-virnucpro"
    fi
    printf '%s\n' "$wanted" >"$conf"
fi
podman --version
