"""``python tests/kill_after_checkpoint.py STEP <overrides>``: ``python -m stn_repro.train <overrides>`` that SIGKILLs
itself right after its checkpoint callback has written step ``STEP``'s checkpoint (in ``on_train_batch_end``, before
that step's validation): a real kill at a known point, for tests/test_resume.py."""

import os
import runpy
import signal
import sys

from pytorch_lightning.callbacks import ModelCheckpoint

KILL_AFTER = int(sys.argv.pop(1))
_save = ModelCheckpoint.on_train_batch_end


def _save_then_kill(self, trainer, *args, **kwargs):
    _save(self, trainer, *args, **kwargs)
    if trainer.global_step == KILL_AFTER:
        os.kill(os.getpid(), signal.SIGKILL)


ModelCheckpoint.on_train_batch_end = _save_then_kill  # the class itself: its checkpoint state key stays the same
runpy.run_module("stn_repro.train", run_name="__main__", alter_sys=True)
