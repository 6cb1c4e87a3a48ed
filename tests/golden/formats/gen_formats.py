#!/usr/bin/env python3
"""tests/golden/formats/gen_formats.py - fixtures written by the reference Python
libraries, read back by tests/test_formats.c (so our readers are checked against
files we did not write), and a check that those libraries read what our writers
produce.

    python3 gen_formats.py            # regenerate the fixtures next to this script
    python3 gen_formats.py --check D  # read the files test_formats left in D
                                      # (run it with AM_FORMATS_KEEP_DIR=D)

Needs numpy, torch, safetensors and gguf (pip). The fixtures are tiny and
deterministic; the values are documented here and asserted in test_formats.c.
"""
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def gen_safetensors(path):
    import torch
    from safetensors.torch import save_file

    t = {
        "a.f32": torch.arange(6, dtype=torch.float32).reshape(2, 3) * 0.5,  # [[0,.5,1],[1.5,2,2.5]]
        "b.f16": torch.tensor([1.0, -2.0, 0.25, 65504.0], dtype=torch.float16),
        "c.bf16": torch.tensor([[1.0, -1.5], [3.0, 256.0]], dtype=torch.bfloat16),
        "d.f64": torch.tensor([3.25], dtype=torch.float64),
        "e.i64": torch.tensor([-1, 2, 1 << 40], dtype=torch.int64),
        "f.i32": torch.tensor([7, -7], dtype=torch.int32),
        "g.i16": torch.tensor([-300], dtype=torch.int16),
        "h.i8": torch.tensor([[-5, 5]], dtype=torch.int8),
        "i.u8": torch.tensor([200], dtype=torch.uint8),
        "j.bool": torch.tensor([True, False, True], dtype=torch.bool),
        "k.empty": torch.zeros((0, 4), dtype=torch.float32),
    }
    save_file(t, path, metadata={"format": "pt", "note": "gen_formats.py"})


def gen_gguf(path):
    import gguf
    from gguf import GGMLQuantizationType as Q, GGUFValueType as V

    w = gguf.GGUFWriter(path, "llama")  # writes general.architecture = "llama"
    w.add_uint8("t.u8", 250)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_float32("t.f32", 1.5)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo")
    w.add_uint64("t.u64", 1 << 62)
    w.add_int64("t.i64", -(1 << 62))
    w.add_float64("t.f64", -2.25)
    w.add_uint64("t.u64_big", (1 << 63) + 5)
    w.add_array("tokenizer.ggml.tokens", ["<unk>", "<s>", "</s>", "▁hi"])
    w.add_array("t.arr_f32", [0.5, -1.0, 2.0])
    w.add_key_value("t.arr_u16", [1, 2, 65535], V.ARRAY, sub_type=V.UINT16)
    w.add_array("t.nested", [[1, 2], [3], [4, 5, 6]])
    w.add_array("t.nested_str", [["a", "bc"], ["def"]])

    rng = np.random.default_rng(1234)
    x = (rng.standard_normal((2, 64)) * 2).astype(np.float32)
    w.add_tensor("f32", x)
    w.add_tensor("f16", np.linspace(-4, 4, 64, dtype=np.float32).astype(np.float16))
    bf = gguf.quants.quantize(x[:1, :32].copy(), Q.BF16)
    w.add_tensor("bf16", bf, raw_dtype=Q.BF16)
    for name, qt in (("q8_0", Q.Q8_0), ("q4_0", Q.Q4_0)):
        q = gguf.quants.quantize(x, qt)
        w.add_tensor(name, q, raw_dtype=qt)
        # What ggml's dequantizer gives back, for the C test to compare against.
        w.add_tensor(name + ".ref", gguf.quants.dequantize(q, qt).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# llama2.c legacy checkpoint, written like export.py legacy_export: every float
# of the body holds its own index (exact in f32), so the test can check offsets.
LLAMA2C_HDR = (8, 16, 2, 2, 1, -10, 4)  # dim, hidden, layers, heads, kv_heads, -vocab, seq


def llama2c_floats(h):
    dim, hid, L, nh, nkv, voc, seq = h
    hs = dim // nh
    n = abs(voc) * dim + L * dim + L * dim * dim + 2 * L * nkv * hs * dim + L * dim * dim
    n += L * dim + 3 * L * dim * hid + dim + 2 * seq * (hs // 2)
    if voc < 0:
        n += abs(voc) * dim
    return n


def gen_llama2c(path):
    n = llama2c_floats(LLAMA2C_HDR)
    with open(path, "wb") as f:
        f.write(struct.pack("7i", *LLAMA2C_HDR))
        f.write(np.arange(n, dtype=np.float32).tobytes())


def check(d):
    """Reads the files test_formats.c wrote (AM_FORMATS_KEEP_DIR) with the
    reference libraries; any exception fails the check."""
    import json

    import gguf
    from safetensors import safe_open

    ok = True
    for root, _dirs, files in sorted(os.walk(d)):
        for name in sorted(files):
            p = os.path.join(root, name)
            rel = os.path.relpath(p, d)
            try:
                if name.endswith(".safetensors"):
                    with safe_open(p, "pt") as f:  # torch: numpy has no bf16
                        keys = list(f.keys())
                        md = f.metadata()
                        shapes = {k: (str(f.get_tensor(k).dtype), tuple(f.get_tensor(k).shape))
                                  for k in keys}
                    print(f"{rel}: {len(keys)} tensors, metadata {md}")
                    for k in keys:
                        print(f"   {k!r} {shapes[k]}")
                elif name.endswith(".gguf"):
                    r = gguf.GGUFReader(p)
                    print(f"{rel}: {len(r.fields)} fields, {len(r.tensors)} tensors")
                    for fld in r.fields.values():
                        if not fld.name.startswith("GGUF."):
                            print(f"   kv {fld.name} = {fld.contents()!r}")
                    for t in r.tensors:
                        deq = gguf.quants.dequantize(t.data, t.tensor_type)
                        print(f"   {t.name} {t.tensor_type.name} ne={t.shape.tolist()} "
                              f"first={deq.flatten()[:2].tolist()}")
                elif name.endswith(".index.json"):
                    j = json.load(open(p))
                    total = 0
                    for k, shard in j["weight_map"].items():
                        with safe_open(os.path.join(root, shard), "pt") as f:
                            total += f.get_tensor(k).numel() * f.get_tensor(k).element_size()
                    assert total == j["metadata"]["total_size"], (total, j["metadata"])
                    print(f"{rel}: {len(j['weight_map'])} entries, total_size {total} ok")
            except Exception as e:  # noqa: BLE001 - report every file
                ok = False
                print(f"{rel}: FAILED: {e!r}")
    return ok


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        sys.exit(0 if check(sys.argv[2]) else 1)
    gen_safetensors(os.path.join(HERE, "py_tensors.safetensors"))
    gen_gguf(os.path.join(HERE, "py_all.gguf"))
    gen_llama2c(os.path.join(HERE, "py_llama2c.bin"))


if __name__ == "__main__":
    main()
