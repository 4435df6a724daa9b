#!/usr/bin/env bash
# Regenerates man/ and completions/ from the clap model.
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTERUP_BLESS=1 cargo test --quiet --bin clusterup docs_are_up_to_date
