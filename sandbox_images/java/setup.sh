#!/bin/sh
# Image build step: compile the warm JVM runner.
set -eu
# The JVM execute-only for the sandbox user: non-dumpable from its execve, so a parked runner
# (agent/execution.py) cannot be traced or have its memory read or written by a run beside it.
chmod 0711 "$(readlink -f "$(command -v java)")"
cd /opt/warmbox
javac -d /opt/warmbox Runner.java
rm -f Runner.java
