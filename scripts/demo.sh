#!/usr/bin/env bash
# The demo behind `make demo`: fine-tune the bundled stories260K with MixLoRA and LoRA (same parameter
# budget) together in one fused run on a commonsense multi-task mix, then evaluate the base model, LoRA
# and MixLoRA on held-out test items. Everything is written under runs/demo (replaced on each run).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=runs/demo
LIMIT=${DEMO_LIMIT:-100}
rm -rf "$OUT"
echo "== training MixLoRA and LoRA together (examples/demo/train.yaml)" >&2
bin/mixlora train examples/demo/train.yaml >/dev/null
echo "== evaluating base, LoRA and MixLoRA on the first $LIMIT test items of each task" >&2
bin/mixlora eval \
  --model assets/models/stories260K/stories260K.bin --tokenizer assets/models/stories260K/tok512.bin \
  --adapter none --adapter "$OUT/lora" --adapter "$OUT/mixlora" \
  --task arc-e --task arc-c --task boolq --task obqa \
  --limit "$LIMIT" --prompt-template none --out "$OUT/eval" > "$OUT/accuracy.txt"
echo
echo "Accuracy (%) on held-out test items (stories260K is a 260K-parameter story model: expect chance-level"
echo "knowledge; the demo shows the pipeline, not a result):"
echo
cat "$OUT/accuracy.txt"
echo
echo "adapters:      $OUT/mixlora, $OUT/lora"
echo "metrics:       $OUT/metrics.jsonl"
echo "loss curve:    $OUT/loss.png"
echo "expert load:   $OUT/eval/expert-load-mixlora.png"
echo "results:       $OUT/eval/results.md"
