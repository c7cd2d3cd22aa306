#!/usr/bin/env bash
# The wire contracts: buf lint, and no breaking change against the previous version of them.
set -euo pipefail
cd "$(dirname "$0")/../proto"
buf lint
# Uncommitted changes against the last commit; a clean tree (CI) against its parent commit.
if [ -n "$(git status --porcelain -- .)" ]; then against=HEAD; else against=HEAD~1; fi
if git cat-file -e "$against:proto/dbcrate/v1" 2>/dev/null; then
  buf breaking --against "../.git#ref=$against,subdir=proto"
fi
