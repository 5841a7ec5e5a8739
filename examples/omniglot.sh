#!/usr/bin/env bash
# Omniglot end to end: self-supervised pretraining on images_background_small1.zip (no labels
# used), ProtoNet fine-tuning, then evaluation on the alphabets that appear only in
# images_background_small2.zip, and prediction against a class bank enrolled from it.
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

# A class bank of the 17 Tagalog characters, five drawings each, read straight from the zip,
# with a reject threshold calibrated on it. Then label the drawings 10-19 of every Tagalog
# character, and three Sanskrit characters the bank has never seen (mostly 'unknown').
sketchshot enroll --model "$OUT/protonet" --support "$OMNI/images_background_small2.zip" \
  --classes Tagalog --shots 5 --calibrate --out "$OUT/tagalog"
mkdir -p "$OUT/unzipped" && unzip -q -o "$OMNI/images_background_small2.zip" \
  'images_background_small2/Tagalog/*' 'images_background_small2/Sanskrit/character0[1-3]/*' \
  -d "$OUT/unzipped"
sketchshot predict --bank "$OUT/tagalog" --csv \
  "$OUT/unzipped/images_background_small2/Tagalog/*/*_1?.png" \
  "$OUT/unzipped/images_background_small2/Sanskrit" > "$OUT/tagalog.csv"
echo "predictions in $OUT/tagalog.csv"
