#!/bin/bash
# One longer run of the built-in default on the emulated kernels: $1 = dtype, $2 = seed.
cd /work/scratch/longrun
/usr/bin/time -v ./dapo-bin train --output-dir run-$1-s$2 --device emu --dtype $1 --seed $2 --steps 150 --eval-every 50 > $1-s$2.out 2> $1-s$2.err
