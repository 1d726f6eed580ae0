#!/bin/sh
echo "${GREETING:-hello}"
echo "running as uid $(id -u) on $(uname -m)"
