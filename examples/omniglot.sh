#!/usr/bin/env bash
# Omniglot end to end: self-supervised pretraining on images_background_small1.zip (no labels
# used), ProtoNet fine-tuning, then evaluation on the alphabets that appear only in
# images_background_small2.zip, and prediction against a small support folder.
# Run from the project root with ../shared beside it; takes about 15 minutes on 2 CPU cores.
set -euo pipefail
OMNI=${OMNI:-../shared/data/omniglot}
OUT=${OUT:-runs/omniglot}

sketchshot pretrain --config examples/omniglot.toml --out "$OUT/simclr"
sketchshot finetune --config examples/omniglot.toml --init "$OUT/simclr" --out "$OUT/protonet"
for ways in 5 20; do
  sketchshot evaluate --model "$OUT/protonet" --data "$OMNI/images_background_small2.zip" \
    --exclude-classes Greek --exclude-classes Latin --split all --ways "$ways" --shots 1
done

# A support folder of one drawing per class, and three new drawings to label.
mkdir -p "$OUT/unzipped" && unzip -q -o "$OMNI/images_background_small2.zip" \
  'images_background_small2/Tagalog/character0[1-5]/*' -d "$OUT/unzipped"
for c in 1 2 3 4 5; do
  src="$OUT/unzipped/images_background_small2/Tagalog/character0$c"
  mkdir -p "$OUT/support/tagalog-$c" && cp "$(ls "$src"/*.png | head -n 1)" "$OUT/support/tagalog-$c/"
done
sketchshot predict --model "$OUT/protonet" --support "$OUT/support" \
  "$OUT"/unzipped/images_background_small2/Tagalog/character0[1-3]/*_20.png
