"""The safetensors exporter: every tensor of the state dict, and the policy in the header's
``metadata``. Tensors that share memory (tied embeddings) are stored once per name, so
``safetensors.torch.load_file`` gives back the whole state dict, tensor for tensor."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

from cipm import CipmError
from cipm.plugin import METADATA_KEY, Exporter, ExportJob, hookimpl


def write_safetensors(job: ExportJob, path: Path) -> None:
    """Save the state dict with the policy as metadata.

    Raises:
        CipmError: safetensors is not installed.
    """
    try:
        from safetensors.torch import save_file
    except ImportError as e:
        raise CipmError("safetensors export needs: pip install 'cipm[formats]'") from e
    state, seen = {}, set()
    for name, tensor in job.model.state_dict().items():
        t = tensor.detach().cpu()
        key = t.untyped_storage().data_ptr()
        shared = key in seen and t.numel() > 0
        seen.add(key)
        state[name] = t.clone() if shared or not t.is_contiguous() else t
    metadata = {"format": "pt"}
    if job.policy is not None:
        metadata[METADATA_KEY] = job.policy.to_json()
    save_file(state, str(path), metadata=metadata)


def read_safetensors_policy(path: Path) -> str | None:
    """The policy from the header alone (the tensors are not read)."""
    with open(path, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
    value = header.get("__metadata__", {}).get(METADATA_KEY)
    return str(value) if value is not None else None


@hookimpl
def cipm_exporters() -> Mapping[str, Exporter]:
    return {
        "safetensors": Exporter(
            write=write_safetensors,
            suffixes=(".safetensors",),
            read_policy=read_safetensors_policy,
            description="the state dict's tensors, with the policy in the header metadata",
        )
    }
