#!/usr/bin/env bash
# Screenshots of a run's TensorBoard dashboards (Custom Scalars, Images, Text) with headless Chromium: how the
# README's pictures in docs/ are made. Not part of CI.
# Usage: bash scripts/tensorboard_screenshots.sh RUN_DIR OUT_DIR
# Needs Debian's chromium (apt-get install -y chromium) and the project's environment (tensorboard, python).
# TensorBoard listens on 127.0.0.1 on a free port and is stopped at the end; Chromium runs with a fresh profile
# and without any network service of its own.
set -euo pipefail
if [ "$#" -ne 2 ]; then
  echo "usage: $0 RUN_DIR OUT_DIR   (RUN_DIR holds tb/, or is itself a TensorBoard log directory)" >&2
  exit 2
fi
RUN_DIR="$1"
OUT_DIR="$2"
LOGDIR="$RUN_DIR"
[ -d "$RUN_DIR/tb" ] && LOGDIR="$RUN_DIR/tb"
if ! ls "$LOGDIR"/events.out.tfevents.* >/dev/null 2>&1; then
  echo "no TensorBoard event files in $LOGDIR: pass a run directory of hdas_tf.search or hdas_tf.train" >&2
  exit 1
fi
CHROMIUM="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
if [ -z "$CHROMIUM" ]; then
  echo "chromium not found: apt-get install -y chromium (or set CHROMIUM=/path/to/chromium)" >&2
  exit 1
fi
PYTHON="${PYTHON:-python}"
TENSORBOARD="${TENSORBOARD:-tensorboard}"
WIDTH="${WIDTH:-1400}"
HEIGHT="${HEIGHT:-1000}"
mkdir -p "$OUT_DIR"
WORK="$(mktemp -d)"
PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"

"$TENSORBOARD" --logdir "$LOGDIR" --host 127.0.0.1 --port "$PORT" >"$WORK/tensorboard.log" 2>&1 &
TB_PID=$!
cleanup() {
  kill "$TB_PID" 2>/dev/null || true
  wait "$TB_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Wait (up to 120 s) until TensorBoard answers and has read the run.
"$PYTHON" - "$PORT" <<'EOF'
import sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/data/runs"
for _ in range(240):
    try:
        if urllib.request.urlopen(url, timeout=2).read() not in (b"", b"[]"):
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.5)
sys.exit("TensorBoard did not come up; see its log")
EOF

for dashboard in custom_scalars images text; do
  out="$OUT_DIR/tensorboard_${dashboard}.png"
  # --virtual-time-budget lets the page's scripts fetch and draw the data before the shot is taken.
  "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$WORK/profile" \
    --window-size="$WIDTH,$HEIGHT" --virtual-time-budget=30000 --screenshot="$out" \
    "http://127.0.0.1:$PORT/#$dashboard" >"$WORK/chromium.log" 2>&1 || {
      cat "$WORK/chromium.log" >&2
      exit 1
    }
  echo "$out"
done
