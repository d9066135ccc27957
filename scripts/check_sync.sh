#!/usr/bin/env bash
# Fails if nbdev-export, nbdev-clean or the README render would change any file:
# the notebooks are the source, fewkit/ and README.md must be exactly what they produce.
set -euo pipefail
cd "$(dirname "$0")/.."
snap() { find fewkit nbs README.md -type f -not -path '*/__pycache__/*' -not -path '*/.ipynb_checkpoints/*' \
           -not -path 'nbs/runs/*' -not -path 'nbs/**/runs/*' -not -name '*.pyc' -print0 | sort -z | xargs -0 sha1sum; }
before=$(snap)
nbdev-export
nbdev-clean
bash scripts/readme.sh
after=$(snap)
if [ "$before" != "$after" ]; then
  echo "FAIL: nbdev-export / nbdev-clean / scripts/readme.sh changed these files:" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  echo "Run 'make clean-nbs' and commit the result." >&2
  exit 1
fi
echo "ok: notebooks, fewkit/ and README.md are in sync and clean"
