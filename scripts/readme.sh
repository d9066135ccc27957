#!/usr/bin/env bash
# README.md is nbs/index.ipynb rendered to Markdown (nbdev-readme needs quarto, which is not installable offline).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
jupyter nbconvert --to markdown --log-level=ERROR nbs/index.ipynb --output-dir "$tmp" --output README >/dev/null
{ echo "<!-- generated from nbs/index.ipynb by scripts/readme.sh (make readme): edit the notebook, not this file -->"; echo; cat "$tmp/README.md"; } > README.md
rm -rf "$tmp"
