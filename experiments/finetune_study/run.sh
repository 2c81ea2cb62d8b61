#!/usr/bin/env bash
# The fine-tune study (experiments/finetune_study/study.py): writes REPORT.md and results.json here
# (runs, generated MIDI and their MLflow store under out/, not committed). About 55 minutes on 2 CPU
# cores: a fine-tune and two from-scratch runs (constant and time-cosine learning rate) of 6
# training minutes each, then the measurements (1024 generated files per base style for the
# shipped model twice and the fine-tuned one).
# Extra arguments go to study.py (--minutes, --files, --model, --corpus, --export,
# --scratch-schedules).
set -euo pipefail
cd "$(dirname "$0")/../.."
MIDIGEN=${MIDIGEN:-.venv/bin/midigen}
PY=${PY:-.venv/bin/python}
if [ ! -d data/corpus ]; then
  $MIDIGEN data build
fi
if [ ! -d data/classical_export/classical ]; then
  # the unseen style: music21's string quartet movements, outside the default corpus
  $MIDIGEN data build --styles classical --out data/classical_export
fi
exec $PY experiments/finetune_study/study.py "$@"
