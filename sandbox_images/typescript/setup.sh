#!/bin/sh
# Image build step: the runner's start-up snapshot with the typescript module loaded and warmed
# (see javascript/runner.js), beside the JavaScript one this image inherits.
set -eu
cd /opt/warmbox
WARMBOX_SNAPSHOT_TYPESCRIPT=1 \
    node --snapshot-blob /opt/warmbox/runner-ts.blob --build-snapshot /opt/warmbox/runner.js
