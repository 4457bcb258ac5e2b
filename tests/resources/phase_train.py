"""`train` with one Trainer phase announced (and slowed), so a test can signal inside it.

SMNEURON_TEST_PHASE: ``evaluation`` (each evaluation batch prints a line and sleeps),
``save`` (the optimizer save prints a line and sleeps 2 s), ``enospc`` (the second
checkpoint save fails with "No space left on device").
"""

import errno
import os
import sys
import time

import transformers

from smneuron.training.entry import main

PHASE = os.environ["SMNEURON_TEST_PHASE"]
Trainer = transformers.Trainer

if PHASE == "evaluation":
    predict = Trainer.prediction_step

    def slow_prediction_step(self, *args, **kwargs):
        print("PHASE evaluation", flush=True)
        time.sleep(0.5)
        return predict(self, *args, **kwargs)

    Trainer.prediction_step = slow_prediction_step
elif PHASE in ("save", "enospc"):
    save = Trainer._save_optimizer_and_scheduler
    saves = []

    def patched_save(self, output_dir):
        saves.append(output_dir)
        if PHASE == "enospc" and len(saves) >= 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if PHASE == "save":
            print("PHASE save", flush=True)
            time.sleep(2)
        return save(self, output_dir)

    Trainer._save_optimizer_and_scheduler = patched_save
else:
    raise SystemExit(f"unknown SMNEURON_TEST_PHASE {PHASE!r}")

sys.exit(main())
