#!/usr/bin/env python3
"""Convert facenet-pytorch's MTCNN weights (pnet.pt, rnet.pt, onet.pt) to one safetensors file.

Usage (from the repository root; needs only numpy, NOT torch):

    pip download --no-deps facenet-pytorch==2.6.0 -d /tmp/fnp
    cd /tmp/fnp && unzip -o facenet_pytorch-2.6.0-py3-none-any.whl && cd -
    /root/.venvs/fixtures/bin/python scripts/convert_mtcnn_weights.py \
        /tmp/fnp/facenet_pytorch/data embed/weights/mtcnn.safetensors

The three .pt files are *legacy* (pre-1.6, non-zip) torch pickles: a stream of pickles
(magic number, protocol version, sys info, the state dict whose tensors refer to storages
by persistent id, the list of storage keys) followed by the raw little-endian storages,
each preceded by its element count as int64. This script parses that format with
`pickle` alone (a custom Unpickler rebuilds the tensors from the storages with numpy), so
converting needs no torch. The newer zip format is handled too, in case the files are
ever re-saved.

Output: float32 tensors named `pnet.<key>`, `rnet.<key>`, `onet.<key>` with the original
state-dict keys (`conv1.weight`, `prelu1.weight`, `dense4.weight`, ...), plus metadata:
the source package and version, and the SHA-256 of each .pt. Deterministic: running it
twice gives byte-identical output (the file is written here rather than with the
`safetensors` package, whose metadata order follows a Rust HashMap and changes per run).
"""

import collections
import hashlib
import io
import json
import pickle
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np

SOURCE = "facenet-pytorch==2.6.0"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# torch storage class name -> numpy dtype (only what state dicts of this kind can hold).
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class StorageType:
    """Stands in for `torch.FloatStorage` & co. while unpickling."""

    def __init__(self, name):
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class Storage:
    """A storage referenced by persistent id; its bytes are filled in later (legacy format)."""

    def __init__(self, dtype, numel):
        self.dtype = dtype
        self.numel = numel
        self.array = None


class LazyTensor:
    """`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`, materialised later."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def numpy(self):
        flat = self.storage.array
        item = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :], shape=self.size, strides=tuple(s * item for s in self.stride)
        )
        return np.ascontiguousarray(view)


def rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *rest):
    return LazyTensor(storage, storage_offset, size, stride)


def rebuild_parameter(data, requires_grad, backward_hooks, *rest):
    return data


class TorchUnpickler(pickle.Unpickler):
    """Resolves only the few globals a state dict needs; anything else is refused."""

    def __init__(self, file, storages, load_storage):
        super().__init__(file)
        self.storages = storages
        self.load_storage = load_storage

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_parameter":
            return rebuild_parameter
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(name)
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")

    def persistent_load(self, pid):
        # legacy: ('storage', storage_type, key, location, numel, view_metadata)
        # zip:    ('storage', storage_type, key, location, numel)
        if pid[0] != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {pid[0]!r}")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if key not in self.storages:
            self.storages[key] = Storage(storage_type.dtype, numel)
            if self.load_storage is not None:
                self.storages[key].array = self.load_storage(key, storage_type.dtype, numel)
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        return self.storages[key]


def load_legacy(data: bytes):
    f = io.BytesIO(data)
    if pickle.load(f) != LEGACY_MAGIC:
        raise ValueError("not a legacy torch file (bad magic number)")
    if pickle.load(f) != 1001:
        raise ValueError("unsupported legacy protocol version")
    sys_info = pickle.load(f)
    if not sys_info.get("little_endian", True):
        raise ValueError("big-endian torch files are not supported")
    storages = {}
    state = TorchUnpickler(f, storages, None).load()
    keys = pickle.load(f)
    for key in keys:
        storage = storages[key]
        (count,) = struct.unpack("<q", f.read(8))
        if count != storage.numel:
            raise ValueError(f"storage {key}: {count} elements on disk, {storage.numel} expected")
        raw = f.read(count * storage.dtype.itemsize)
        storage.array = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<")).astype(storage.dtype)
    if f.read(1):
        raise ValueError("trailing bytes after the last storage")
    return state


def load_zip(path: Path):
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        prefix = names[0].split("/")[0]

        def load_storage(key, dtype, numel):
            raw = z.read(f"{prefix}/data/{key}")
            return np.frombuffer(raw, dtype=dtype.newbyteorder("<"))[:numel].astype(dtype)

        return TorchUnpickler(io.BytesIO(z.read(f"{prefix}/data.pkl")), {}, load_storage).load()


def load_state_dict(path: Path):
    state = load_zip(path) if zipfile.is_zipfile(path) else load_legacy(path.read_bytes())
    return collections.OrderedDict((k, v.numpy()) for k, v in state.items())


def save_safetensors(tensors, path: Path, metadata):
    """Writes the safetensors layout: u64 header length, JSON header, raw little-endian data.

    Keys sorted (as the `safetensors` package does for tensors), metadata sorted too, header
    padded with spaces to a multiple of 8 bytes so the data section is aligned."""
    header, offset, blobs = {"__metadata__": dict(sorted(metadata.items()))}, 0, []
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name], dtype="<f4")
        blob = array.tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    tensors, metadata = {}, {"source": SOURCE, "format": "pt", "converted_by": "scripts/convert_mtcnn_weights.py"}
    for net in ("pnet", "rnet", "onet"):
        path = src / f"{net}.pt"
        metadata[f"{net}.pt.sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        for key, value in load_state_dict(path).items():
            tensors[f"{net}.{key}"] = np.ascontiguousarray(value.astype(np.float32))
            print(f"{net}.{key}: {value.dtype} {list(value.shape)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(tensors, out, metadata)
    print(f"wrote {out} ({out.stat().st_size} bytes, {len(tensors)} tensors)")


if __name__ == "__main__":
    main()
