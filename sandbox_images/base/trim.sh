#!/bin/sh
# Remove what a sandbox never reads from a freshly debootstrapped rootfs (argument: its path).
# Only caches, documentation and translations go: nothing a program can import or exec.
set -eu
root=${1:?usage: trim.sh ROOTFS}
[ -x "$root/bin/sh" ] || { echo "trim.sh: $root does not look like a rootfs" >&2; exit 1; }
cd "$root"
rm -rf var/cache/apt/* var/lib/apt/lists/* var/cache/debconf/*-old var/lib/dpkg/*-old
rm -rf usr/share/doc/* usr/share/man/* usr/share/info/* usr/share/lintian usr/share/linda
# Translations: the sandbox runs with LANG=C.UTF-8, which glibc has built in.
rm -rf usr/share/locale/*
find var/log -type f -exec truncate -s 0 {} +
# Debootstrap's own traces and host-specific files that should not end up in every container.
rm -rf debootstrap var/log/bootstrap.log
rm -f etc/hostname etc/machine-id var/lib/dbus/machine-id
: >etc/resolv.conf
