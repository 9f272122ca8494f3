"""Train each committed model for a few batches, as its module does, and print a digest of the
weights: `test_models` runs this natively and under QEMU's emulation of another CPU and compares
the lines. Run with `striate.models.training.PORTABLE_ENV` set."""

import hashlib
import sys

from striate import models
from striate.models import training

BATCHES = 2


def digest(name: str) -> str:
    module = models._module(name)
    fit = module.fit

    def few_batches(build, x, y, epochs, seed, batch=64, **kw):
        return fit(build, x[:BATCHES * batch], y[:BATCHES * batch], 1, seed, batch, **kw)

    module.fit = few_batches
    try:
        state = module.train(log=lambda line: None).state_dict()
    finally:
        module.fit = fit
    h = hashlib.sha256()
    for key, value in state.items():
        h.update(key.encode() + value.numpy().tobytes())
    return h.hexdigest()


if __name__ == "__main__":
    assert training.portable(), "run with striate.models.training.PORTABLE_ENV"
    for name in sys.argv[1:]:
        print(name, digest(name), flush=True)
