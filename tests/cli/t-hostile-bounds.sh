#!/bin/bash
# Hostile images of every format in 1 GiB and 2 s: damaged copies of each
# fuzz seed (tests/fuzz/corpus) through info, map, check and dd end with an
# exit code and a message, never a signal, a hang or unbounded output
# (tests/cli/hostile-bounds.py says how the copies are made).
. "$(dirname "$0")/lib.sh"
"$DEB_PYTHON" "$TOP/tests/cli/hostile-bounds.py" "$QIMG" "$TOP/tests/fuzz/corpus" "$SCRATCH"
