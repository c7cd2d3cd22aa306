#!/usr/bin/env bash
# The wire contracts: buf lint, and no breaking change against main's (once main has them).
set -euo pipefail
cd "$(dirname "$0")/../proto"
buf lint
if git cat-file -e main:proto/dbcrate/v1 2>/dev/null; then
  buf breaking --against '../.git#branch=main,subdir=proto'
fi
