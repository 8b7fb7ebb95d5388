#!/usr/bin/env bash
# Fails when a TypeScript line is over 140 characters (the house rule; biome's lineWidth cannot split a
# long string literal, so the formatter alone does not keep it). Used by `make lint`.
set -euo pipefail
cd "$(dirname "$0")/.."
max=140
# grep in a UTF-8 locale counts characters (mawk, Debian's awk, counts bytes).
long=$(find api cni ipamctl ipamd lib scripts test *.ts -name '*.ts' -not -path 'test/fixtures/*' | sort |
  LC_ALL=C.UTF-8 xargs grep -nHE "^.{$((max + 1)),}" | cut -d: -f1,2 || true)
if [ -n "$long" ]; then
  echo "$long" >&2
  echo "check-line-length: lines over $max characters; split them (long strings by concatenation)" >&2
  exit 1
fi
