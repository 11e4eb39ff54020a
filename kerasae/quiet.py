"""Quiet start-up: what native code writes to stderr while Keras imports its backend, hidden.

A leaf: it imports nothing of kerasae, so the package's `__init__` and the backends both use it.
"""

import contextlib
import os
import sys


@contextlib.contextmanager
def native_stderr():
    """Hides what native code writes to stderr while Keras imports its backend.

    TensorFlow logs CUDA and oneDNN notices through absl before TF_CPP_MIN_LOG_LEVEL
    takes effect; TF_CPP_MIN_LOG_LEVEL=0 shows them again.
    """
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
