"""Which device the Keras networks train on: a CUDA GPU, Apple's Metal GPU, or the CPU.

Decided once per process, on first use, because TensorFlow's device settings (memory growth) can
only be changed before a GPU is first used. TensorFlow is imported here, not at module import, so
that loading the asset graph does not pay for it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import sys

# float16 tensor cores arrived with Volta (compute capability 7.0); older GPUs gain nothing from it.
TENSOR_CORES = (7, 0)


def training_device() -> dict:
    """{"device": "cuda" | "metal" | "cpu", "name", "mixed_precision", "policy"} of this process.

    `policy` is the Keras dtype policy the networks build their layers with ("mixed_float16" on a
    CUDA GPU with tensor cores, else "float32"). It is passed to each layer rather than set globally
    because `keras.backend.clear_session()`, called before every network, resets the global policy.
    """
    return dict(_detect())


@functools.cache
def _detect() -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus and sys.platform == "darwin" and platform.machine() == "arm64":
        # tensorflow-metal: float16 support is partial there, so the networks stay in float32.
        return {
            "device": "metal",
            "name": _gpu_name(tf, gpus[0], "Apple GPU"),
            "mixed_precision": False,
            "policy": "float32",
            "count": len(gpus),
        }
    if gpus:
        for gpu in gpus:
            # Take GPU memory as needed rather than all of it up front, so that several processes (or the
            # tree families' GPU builds) can share one card. A GPU already initialised keeps its setting.
            with contextlib.suppress(RuntimeError):
                tf.config.experimental.set_memory_growth(gpu, True)
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") or (0, 0)
        mixed = tuple(capability) >= TENSOR_CORES
        return {
            "device": "cuda",
            "name": _gpu_name(tf, gpus[0], gpus[0].name),
            "mixed_precision": mixed,
            "policy": "mixed_float16" if mixed else "float32",
            "count": len(gpus),
            "compute_capability": ".".join(map(str, capability)),
        }
    return {
        "device": "cpu",
        "name": f"{platform.machine() or 'cpu'} ({os.cpu_count()} cores)",
        "mixed_precision": False,
        "policy": "float32",
        "count": 1,
    }


def _gpu_name(tf, gpu, default: str) -> str:
    try:
        return tf.config.experimental.get_device_details(gpu).get("device_name") or default
    except Exception:
        return default
