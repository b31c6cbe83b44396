#!/bin/sh
# Boots a throw-away container for tests/systemd/test_manager.py. Run by the test, as root, in a
# private mount namespace (`unshare -m --propagation private`), so every mount below vanishes
# with the namespace. Usage: boot.sh TMPFS_DIR SOURCE_CHECKOUT
#
# The container's / is an overlay of the host's / with a tmpfs as upper layer: it sees the host's
# programs (systemd, python3, curl) and keeps none of its writes. The project is installed into
# /opt/qonic-proxy of the overlay, from /usr/bin/python3 (an interpreter every account, the
# DynamicUser included, can execute), before the container boots.
set -eu
T=$1
SRC=$2
mount -t tmpfs -o mode=0700 qp-machine "$T"
mkdir "$T/upper" "$T/work" "$T/root" "$T/tmp" "$T/src"
mount -t overlay qp-overlay -o "lowerdir=/,upperdir=$T/upper,workdir=$T/work" "$T/root"
# nspawn keeps its own runtime state in /run: a private one leaves the host's untouched.
mount -t tmpfs -o mode=0755 qp-run /run
# Build the venv at the path it has inside the container (its scripts name their interpreter by
# absolute path), writing into the overlay; from a copy, so the checkout gets no build/ folder.
mount --bind "$T/root/opt" /opt
cp -r "$SRC/pyproject.toml" "$SRC/README.md" "$SRC/qonic_proxy" "$T/src/"
export TMPDIR="$T/tmp" PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
timeout 120 /usr/bin/python3 -m venv /opt/qonic-proxy
timeout 180 /opt/qonic-proxy/bin/pip install -q "$T/src"
mkdir -p /opt/qp-test
cp "$SRC/tests/browser.py" /opt/qp-test/browser.py
umount /opt
echo "qp-machine: installed, booting"
exec systemd-nspawn --quiet --directory="$T/root" --machine=qp-machine --register=no \
    --keep-unit --boot --private-network --console=read-only
