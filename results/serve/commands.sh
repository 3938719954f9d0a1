#!/usr/bin/env bash
# Deployment end to end on a trained run: export, predict on real test images saved as files,
# serve and call it over HTTP, measure inference speed. Outputs go to OUT_DIR (default: next to this script).
#   results/serve/commands.sh [RUN_WORKDIR] [PORT] [OUT_DIR]   (default runs/deploy_smoke, 8765, this folder)
set -euo pipefail
RUN=${1:-runs/deploy_smoke}
PORT=${2:-8765}
OUT=${3:-$(dirname "$0")}
mkdir -p "$OUT"
MODEL=$RUN/exported
SAMPLES=$OUT/samples

# 1. Export the best member (by validation accuracy); the command checks the artifact on the test set.
fmnist-jax export --workdir "$RUN" --out "$MODEL" | tee "$OUT/export.txt"
cp "$MODEL/manifest.json" "$OUT/manifest.json"

# 2. Real test images as files: the first of each class as 28x28 PNG, plus the first one as a
#    300x300 RGB "photo" (dark item on white, which `--invert auto` detects), and a non-image.
mkdir -p "$SAMPLES"
python - "$SAMPLES" <<'EOF'
import sys
import numpy as np
from PIL import Image
from fmnist_jax import data
out = sys.argv[1]
ds = data.load()
for k, name in enumerate(data.CLASS_NAMES):
    i = int(np.flatnonzero(ds.test_labels == k)[0])
    Image.fromarray(ds.test_images[i]).save(f"{out}/test{i:04d}_{name.replace('/', '-').replace(' ', '-')}.png")
photo = Image.fromarray(255 - ds.test_images[0]).resize((300, 300), Image.Resampling.BICUBIC).convert("RGB")
photo.save(f"{out}/photo_test0000_{data.CLASS_NAMES[ds.test_labels[0]].replace(' ', '-')}.jpg", quality=90)
open(f"{out}/not_an_image.txt", "w").write("hello\n")
EOF

# 3. predict: from the run (exports in memory) and from the artifact as JSON; the bad file is reported alone.
fmnist-jax predict --workdir "$RUN" "$SAMPLES"/* > "$OUT/predict.txt" 2> "$OUT/predict_errors.txt" || true
fmnist-jax predict --model "$MODEL" --json "$SAMPLES"/* > "$OUT/predict.json" 2> /dev/null || true

# 4. serve on loopback and call it (good and bad requests), then stop it.
fmnist-jax serve --model "$MODEL" --port "$PORT" > "$OUT/serve_log.txt" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break; sleep 1; done
{
  echo "\$ curl /health";   curl -s "http://127.0.0.1:$PORT/health"; echo
  echo "\$ curl /metadata (member, test accuracy, limits)"
  curl -s "http://127.0.0.1:$PORT/metadata" | python -c "import json,sys; m=json.load(sys.stdin); print(json.dumps({k: m[k] for k in ('member', 'test_accuracy', 'limits')}))"
  for f in "$SAMPLES"/test*_Sneaker.png "$SAMPLES"/photo_*.jpg; do
    echo "\$ curl -F file=@$(basename "$f") /predict"
    curl -s -F "file=@$f" "http://127.0.0.1:$PORT/predict" | python -c "import json,sys; p=json.load(sys.stdin)['predictions'][0]; print(p['class'], round(p['probability'], 4))"
  done
  echo "\$ curl -F file=@not_an_image.txt /predict"
  curl -s -w " HTTP %{http_code}" -F "file=@$SAMPLES/not_an_image.txt" "http://127.0.0.1:$PORT/predict"; echo
  echo "\$ curl -d '{\"images\": [[1,2,3]]}' /predict"
  curl -s -w " HTTP %{http_code}" -H 'content-type: application/json' -d '{"images": [[1,2,3]]}' "http://127.0.0.1:$PORT/predict"; echo
} | tee "$OUT/serve_calls.txt"
kill $SERVER

# 5. Inference speed of the artifact (batch 1 latency, batch 256 throughput) on real test images.
python benchmarks/inference.py --model "$MODEL" --out "$OUT/inference_cpu.json"
