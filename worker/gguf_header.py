"""Reading a GGUF file's header (metadata and tensor table) without touching its tensor data.

`gguf.GGUFReader` builds a numpy view of every element of every metadata
array (a vocabulary: ~100 k of them), about 5 s for a small model, and
transformers' loader does that three times anyway; the checks that decide
whether a file can be imported need a few keys and the tensor table, so they
read the header sequentially here and skip arrays by their length. A tensor
that would end past the end of the file means the file is truncated.
"""
from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GGUF_MAGIC = b"GGUF"


class GgufImportError(ValueError):
    """The file cannot be imported (the message says why), or the target name is not usable."""


@dataclass(frozen=True)
class GgufInfo:
    """What the import needs from a GGUF file's header, read without dequantising anything."""

    architecture: str
    model_name: str | None
    file_type: str | None  # e.g. MOSTLY_Q4_1 (llama.cpp's name for the file's main quantisation)
    tensor_types: tuple[str, ...]  # every tensor type present, e.g. ("F32", "Q4_1", "Q8_0")
    tensor_count: int
    parameters: int
    chat_template: bool


def _check_file(path: Path) -> None:
    if not path.exists():
        raise GgufImportError(f"{path}: no such file")
    if path.is_dir():
        raise GgufImportError(f"{path} is a folder, not a GGUF file")
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise GgufImportError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if magic != GGUF_MAGIC:
        raise GgufImportError(
            f"{path.name} is not a GGUF file (it starts with {magic!r}, a GGUF file with b'GGUF')")


# GGUF value types (gguf.GGUFValueType) -> struct format of one value; 8 is a string, 9 an array.
_SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_READ_SUPPORTED_VERSIONS = (2, 3)


class _Truncated(Exception):
    pass


class _HeaderReader:
    """A sequential reader of a GGUF header: values are unpacked or skipped, never copied as arrays."""

    def __init__(self, buffer: memoryview, endian: str) -> None:
        self.buffer, self.endian, self.pos = buffer, endian, 0

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(self.endian + fmt)
        if self.pos + size > len(self.buffer):
            raise _Truncated
        (value,) = struct.unpack_from(self.endian + fmt, self.buffer, self.pos)
        self.pos += size
        return value

    def skip(self, size: int) -> None:
        if size < 0 or self.pos + size > len(self.buffer):
            raise _Truncated
        self.pos += size

    def string(self, keep: bool = True) -> str | None:
        length = self.unpack("Q")
        start = self.pos
        self.skip(length)
        return bytes(self.buffer[start:self.pos]).decode("utf-8", errors="replace") if keep else None

    def value(self, value_type: int, keep: bool) -> Any:
        if value_type == _STRING:
            return self.string(keep)
        if value_type in _SCALAR_FORMATS:
            return self.unpack(_SCALAR_FORMATS[value_type])
        if value_type == _ARRAY:
            element_type, count = self.unpack("I"), self.unpack("Q")
            if element_type in _SCALAR_FORMATS:
                self.skip(count * struct.calcsize(self.endian + _SCALAR_FORMATS[element_type]))
            elif element_type == _STRING:
                if count * 8 > len(self.buffer) - self.pos:
                    raise _Truncated
                for _ in range(count):
                    self.string(keep=False)
            else:
                raise ValueError(f"unknown array element type {element_type}")
            return None
        raise ValueError(f"unknown metadata value type {value_type}")


def _dequantisable_types() -> set[Any] | None:
    """The tensor types `gguf.dequantize` (what transformers' loader calls on every tensor) implements.

    It handles F32 and F16 itself and every type with a class in `gguf.quants`;
    None (no early check; transformers' own error then) if that table moved.
    """
    from gguf import GGMLQuantizationType, quants

    table = getattr(quants, "_type_traits", None)
    if not isinstance(table, dict):
        return None
    return {GGMLQuantizationType.F32, GGMLQuantizationType.F16, *table}


def _parse_header(path: Path) -> GgufInfo:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

    size = path.stat().st_size
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        buffer = memoryview(mapped)
        try:
            reader = _HeaderReader(buffer, "<")
            reader.pos = 4
            version = reader.unpack("I")
            if version & 0xFFFF == 0:  # written on a big-endian machine
                reader.endian, reader.pos = ">", 4
                version = reader.unpack("I")
            if version not in _READ_SUPPORTED_VERSIONS:
                raise GgufImportError(f"{path.name}: GGUF version {version} is not supported "
                                      f"(versions {', '.join(map(str, _READ_SUPPORTED_VERSIONS))} are)")
            tensor_count, kv_count = reader.unpack("Q"), reader.unpack("Q")
            wanted = {"general.architecture", "general.name", "general.file_type", "general.alignment"}
            meta: dict[str, Any] = {}
            chat_template = False
            for _ in range(kv_count):
                key = reader.string() or ""
                value = reader.value(reader.unpack("I"), keep=key in wanted)
                if key in wanted:
                    meta[key] = value
                chat_template = chat_template or key == "tokenizer.chat_template"
            tensors = []
            for _ in range(tensor_count):
                name = reader.string() or ""
                dims = [reader.unpack("Q") for _ in range(reader.unpack("I"))]
                type_id, offset = reader.unpack("I"), reader.unpack("Q")
                tensors.append((name, dims, type_id, offset))
            alignment = int(meta.get("general.alignment") or 32)
            data_start = -(-reader.pos // alignment) * alignment
        except GgufImportError:
            raise
        except _Truncated:
            raise GgufImportError(f"{path.name} is not a readable GGUF file: truncated or corrupt "
                                  f"(the file ends inside its header, at byte {size})") from None
        except (ValueError, OverflowError, struct.error) as exc:
            raise GgufImportError(f"{path.name} is not a readable GGUF file: truncated or corrupt ({exc})") from None
        finally:
            buffer.release()

    dequantisable = _dequantisable_types()
    types, parameters = set(), 0
    for name, dims, type_id, offset in tensors:
        try:
            qtype = GGMLQuantizationType(type_id)
            block, block_bytes = GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise GgufImportError(f"{path.name}: tensor {name} has unknown tensor type {type_id}") from None
        elements = math.prod(dims)
        if data_start + offset + elements // block * block_bytes > size:
            raise GgufImportError(f"{path.name} is not a readable GGUF file: truncated or corrupt "
                                  f"(tensor {name} ends past the end of the file, {size} bytes)")
        if dequantisable is not None and qtype not in dequantisable:
            raise GgufImportError(
                f"{path.name}: tensor {name} is stored as {qtype.name}, which the gguf package cannot "
                f"dequantise (it can: {', '.join(sorted(t.name for t in dequantisable))})")
        types.add(qtype.name)
        parameters += elements
    architecture = meta.get("general.architecture")
    if not isinstance(architecture, str) or not architecture:
        raise GgufImportError(f"{path.name} has no general.architecture in its metadata: not a model file")
    file_type = meta.get("general.file_type")
    if isinstance(file_type, int):
        try:
            file_type = LlamaFileType(file_type).name
        except ValueError:
            file_type = str(file_type)
    return GgufInfo(architecture=architecture, model_name=meta.get("general.name"), file_type=file_type,
                    tensor_types=tuple(sorted(types)), tensor_count=len(tensors), parameters=parameters,
                    chat_template=chat_template)


def read_gguf_info(path: Path) -> GgufInfo:
    """The header of a GGUF file (no tensor is read), or a GgufImportError naming what is wrong with it."""
    _check_file(path)
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise GgufImportError("GGUF import needs the `gguf` package: pip install gguf") from None
    return _parse_header(path)
