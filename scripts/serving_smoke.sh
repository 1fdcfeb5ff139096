#!/usr/bin/env bash
# Check an exported model the way TF Serving reads it: scripts/serving_smoke.sh EXPORT_DIR/N [BATCH]
#
# 1. `saved_model_cli show --all` (signatures, dtypes, shapes);
# 2. `saved_model_cli run --inputs images=x.npy` on a generated uint8 batch (random pixels, seed 0) of the
#    signature's size (a --resize export: the trained size from assets.extra/export.json, or $IMAGE_SIZE);
# 3. checks the outputs: shapes, probabilities summing to 1, classes = argmax(logits).
# Uses .venv/ of this checkout if present (or $PYTHON); needs only TensorFlow and NumPy, not hdas_tf.
set -euo pipefail

DIR="${1:?usage: scripts/serving_smoke.sh EXPORT_DIR/VERSION [BATCH]}"
BATCH="${2:-2}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
SMCLI=("$PYTHON" -m tensorflow.python.tools.saved_model_cli)
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

if [[ ! -f "$DIR/saved_model.pb" ]]; then
  echo "serving_smoke: $DIR/saved_model.pb not found; pass a version folder, e.g. exports/digits/1" >&2
  exit 1
fi
if [[ ! "$(basename "$DIR")" =~ ^[0-9]+$ ]]; then
  echo "serving_smoke: warning: $(basename "$DIR") is not an integer;" \
    "TF Serving only loads integer version folders" >&2
fi

echo "== saved_model_cli show --dir $DIR --all"
SHOW="$("${SMCLI[@]}" show --dir "$DIR" --all)"
echo "$SHOW"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# The input size: the signature's (-1 = any size: a --resize export).
SHAPE="$(echo "$SHOW" | awk '/signature_def\[.serving_default.\]/{s=1} s && /inputs\[.images.\]/{i=1} i && /shape:/{print; exit}')"
"$PYTHON" - "$SHAPE" "$DIR" "$BATCH" "$TMP/x.npy" "${IMAGE_SIZE:-}" <<'EOF'
import json, os, re, sys
import numpy as np
shape, export_dir, batch, out, size = sys.argv[1:6]
dims = [int(d) for d in re.findall(r"-?\d+", shape)]
if len(dims) != 4 or dims[3] != 3:
    sys.exit(f"serving_smoke: unexpected input shape {shape!r}")
h, w = dims[1:3]
if h < 0 or w < 0:
    meta = os.path.join(export_dir, "assets.extra", "export.json")
    h, w = ([int(size)] * 2 if size else json.load(open(meta))["image_size"] if os.path.exists(meta) else (32, 32))
x = np.random.default_rng(0).integers(0, 256, (int(batch), h, w, 3), dtype=np.uint8)
np.save(out, x)
print(f"== generated {out}: uint8 {x.shape}")
EOF

echo "== saved_model_cli run --dir $DIR --tag_set serve --signature_def serving_default --inputs images=x.npy"
mkdir -p "$TMP/out"
"${SMCLI[@]}" run --dir "$DIR" --tag_set serve --signature_def serving_default \
  --inputs "images=$TMP/x.npy" --outdir "$TMP/out" --overwrite
"$PYTHON" - "$TMP/out" "$BATCH" <<'EOF'
import os, sys
import numpy as np
out, batch = sys.argv[1], int(sys.argv[2])
r = {f[:-4]: np.load(os.path.join(out, f), allow_pickle=True) for f in os.listdir(out) if f.endswith(".npy")}
missing = {"logits", "probabilities", "classes"} - set(r)
assert not missing, f"outputs {sorted(missing)} missing (got {sorted(r)})"
p, logits, classes = r["probabilities"], r["logits"], r["classes"]
assert p.shape == logits.shape and p.shape[0] == batch and classes.shape == (batch,), (p.shape, classes.shape)
assert p.dtype == np.float32 and logits.dtype == np.float32 and classes.dtype == np.int64
assert np.allclose(p.sum(-1), 1.0, atol=1e-5), p.sum(-1)
assert (classes == logits.argmax(-1)).all()
for k in sorted(r):
    print(f"{k}: {r[k].dtype} {r[k].shape} {r[k].tolist() if r[k].ndim == 1 else ''}")
print("serving smoke test passed")
EOF
