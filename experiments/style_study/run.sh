#!/usr/bin/env bash
# The style study on the shipped model and the default corpus: writes
# experiments/style_study/REPORT.md and results.json (generated MIDI under out/, not committed).
#
#   bash experiments/style_study/run.sh            # the full study (about 4 minutes on 2 CPU cores)
#   bash experiments/style_study/run.sh --quick    # smoke run: a few files, 2 interpolation pairs
#
# Extra arguments go to study.py (--files N, --pairs N, --all-pairs, --model DIR ...; a later
# --model or --corpus wins). MIDIGEN_THREADS sets torch's threads (default 1: see study.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
MIDIGEN=${MIDIGEN:-.venv/bin/midigen}
PY=${PY:-.venv/bin/python}
if [ ! -d data/corpus ]; then
  $MIDIGEN data build
fi
exec $PY experiments/style_study/study.py --model models/pretrained --corpus data/corpus "$@"
