#!/bin/bash
# Peak device bytes (the emulator's meter) of GPT-2 124M's training step and one RL step,
# f32 and bf16.
cd /work/scratch/mem
for dtype in f32 bf16; do
  for t in 128 256; do
    cmd="dapo bench --device emu --full-size --dtype $dtype --only train --batch-size 1 --seq-len $t"
    echo "\$ $cmd"; ./dapo-bin ${cmd#dapo } 2>&1
  done
  cmd="dapo bench --device emu --full-size --dtype $dtype --only rl-step"
  echo "\$ $cmd"; ./dapo-bin ${cmd#dapo } 2>&1
done
