#!/bin/sh
# Image build step: build matplotlib's font cache once, so a pre-import in a fresh /tmp only copies it.
set -eu
export MPLBACKEND=Agg MPLCONFIGDIR=/opt/warmbox/matplotlib
python3 -c 'import matplotlib.pyplot'
