"""Artifacts as an adversary who knows the format writes them: any tensors and metadata, with a
valid checksum, bypassing ``artifacts.encode``'s checks (so the decoders' own checks are tested)."""

from __future__ import annotations

import json

import numpy as np
import safetensors.numpy

from mbrl_ros.common import artifacts
from mbrl_ros.control.controller import CONTROLLER_SCHEMA


def signed(tensors: dict, meta_text: str) -> bytes:
    """An artifact of ``tensors`` and metadata text with a valid checksum."""
    tensors = {
        k: np.ascontiguousarray(v) for k, v in tensors.items() if k != artifacts.CHECKSUM_TENSOR
    }
    return safetensors.numpy.save(
        tensors | {artifacts.CHECKSUM_TENSOR: artifacts.checksum(meta_text, tensors)},
        metadata={artifacts.META_KEY: meta_text},
    )


def raw_controller(x_hat, u_hat, K, k, cov, *, dt_ns: int, start_ns: int, joint_names) -> bytes:
    """Controller artifact bytes of these arrays, whatever their values."""
    meta = json.dumps(
        {
            "schema": CONTROLLER_SCHEMA.name,
            "version": CONTROLLER_SCHEMA.version,
            "joint_names": list(joint_names),
            "dt_ns": dt_ns,
            "start_ns": start_ns,
            "state_layout": "q,qd",
        }
    )
    return signed({"x_hat": x_hat, "u_hat": u_hat, "K": K, "k": k, "cov": cov}, meta)
