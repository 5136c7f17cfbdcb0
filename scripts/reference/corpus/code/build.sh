#!/bin/sh
set -eu
for f in "$@"; do
  [ -f "$f" ] || { echo "missing: $f" >&2; exit 1; }
  sha256sum -- "$f" | awk '{print $1}' > "${f%.*}.sha256"
done
echo "ok: $# files" && exit 0
