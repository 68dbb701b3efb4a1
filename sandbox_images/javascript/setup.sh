#!/bin/sh
# Image build step.
set -eu
# node execute-only for the sandbox user, so that every node process is non-dumpable from its
# execve (the kernel's rule for a binary its user cannot read): a parked runner
# (agent/execution.py) cannot be traced or have its memory read or written by the run beside it.
chmod 0711 "$(readlink -f /usr/bin/node)"
# The runner's start-up snapshot (see runner.js), built by the node that will load it.
cd /opt/warmbox
node --snapshot-blob /opt/warmbox/runner.blob --build-snapshot /opt/warmbox/runner.js
