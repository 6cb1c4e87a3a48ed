#!/usr/bin/env python3
"""Generates the tokenizer golden fixtures in this directory.

The reference is the python `sentencepiece` library:
  llama_cases.tsv   a varied corpus encoded/decoded with LLaMA-2's tokenizer.model
                    (+ a "big" line: CRC32 and count of the ids of ~100 KB of it)
  llama_decode.tsv  DecodeIds on hand-picked and random id sequences
  chat.tsv          LLaMA-2-chat dialogs encoded with generation.py's formula
  synth_N.tsv       our synthetic vocabularies (written by the C code's
                    am_tokenizer_write_model) encoded by sentencepiece
  variant_X.model/.tsv  the synthetic 512 model edited with protobuf (UNUSED
                    pieces, USER_DEFINED pieces, remove_extra_whitespaces, no
                    byte fallback, no dummy prefix) and its expected ids

Texts and decoded outputs are hex so that any bytes (invalid UTF-8, NUL,
tabs) survive; ids are comma-separated; "-" means empty.

Usage (once, from the repository root, after building test_tokenizer):
  python3 tests/golden/tokenizer/gen_tokenizer_golden.py \
      --test-bin build-tok/bin/test_tokenizer
The test binary writes the synthetic .model files (AM_TOK_GOLDEN_EXPORT) so
that the cross-check covers our ModelProto writer too.
"""
import argparse
import os
import random
import struct
import subprocess
import sys
import tempfile
import zlib

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared", "models"))
SYNTH_SIZES = [260, 512, 4000]
BIG_MIN_BYTES = 100 * 1024


def fixed_corpus():
    s = [
        ("empty", ""), ("space", " "), ("spaces3", "   "), ("x", "x"),
        ("hello", "hello world"), ("hello_caps", "Hello, World!"),
        ("leading", " leading space"), ("trailing", "trailing space "),
        ("two_leading", "  two leading"), ("runs", "a  b   c    d     e"),
        ("tabs", "\t tab\tinside\t\t"), ("newlines", "line1\nline2\r\nline3\n"),
        ("only_newlines", "\n\n\n"), ("mixed_ws", " \t \n \r\n  \x0b\x0c end"),
        ("digits", "1234567890"), ("numbers", "3.14159 2,718 1e-9 0x1F -42 +7 100%"),
        ("date", "year 2023-11-27 at 12:34:56"),
        ("python", 'def f(x):\n    return x**2  # square\n\nprint(f(3))\n'),
        ("c", 'int main(void) { printf("%d\\n", 42); return 0; }'),
        ("json", '{"key": [1, 2, {"a": null, "b": true}], "s": "v"}'),
        ("html", '<html><body class="x">&amp; &lt;tag&gt;</body></html>'),
        ("inst", "[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nHi there [/INST]"),
        ("inst2", "[INST] What is 2+2? [/INST] 4 "),
        ("special_text", "<s>hi</s> <unk> <0x0A> <pad>"),
        ("german", "Grüße aus Köln, schöne Straße"), ("french", "naïve café résumé à l'œuvre"),
        ("greek", "Ελληνικά κείμενα με τόνους"), ("russian", "Русский текст, ёлка и щи."),
        ("hebrew", "עברית מימין לשמאל"), ("arabic", "اللغة العربية جميلة"),
        ("hindi", "हिन्दी भाषा"), ("thai", "ภาษาไทยไม่มีช่องว่าง"),
        ("japanese", "日本語のテキストです。カタカナも。"), ("chinese", "中文文本，标点符号。你好，世界！"),
        ("korean", "한국어 텍스트입니다"), ("emoji", "emoji 😀👍🏽🇺🇸 👨‍👩‍👧 ❤️"),
        ("combining", "combining e\u0301 a\u0308 n\u0303"), ("math", "math ∑∫√∞ ≤≥ ≠ ∀x∈ℝ"),
        ("zero_width", "zero width \u200b joiner \u200d non\u200cjoiner"),
        ("nbsp", "nbsp\u00a0here and\u2009thin"), ("ideographic_space", "ideographic\u3000space"),
        ("fullwidth", "ｆｕｌｌｗｉｄｔｈ　ＡＢＣ１２３"), ("astral", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 astral 𝄞"),
        ("fffd_literal", "\ufffd literal replacement \ufffd\ufffd"),
        ("nul", "\x00nul\x00 inside"), ("controls", "\x7f\x1b[31mred\x1b[0m\x01\x02"),
        ("long_word", "supercalifragilisticexpialidocious" * 3), ("a100", "a" * 100),
        ("sp50", " " * 50), ("ab40", "ab" * 40), ("dashes", "----- ===== _____ ....."),
        ("url", "https://example.com/path?q=1&r=two#frag"), ("email", "someone@example.org"),
        ("quotes", "\u201csmart quotes\u201d and \u2018single\u2019 \u00abguillemets\u00bb"),
        ("mixed_scripts", "English русский 中文 العربية 😀 done"),
    ]
    out = [(n, t.encode("utf-8")) for n, t in s]
    out += [
        ("inv_ff", b"\xff"), ("inv_lead_cont", b"\x80abc"), ("inv_trunc2", b"abc\xc3"),
        ("inv_bad_cont", b"\xc3\x28"), ("inv_trunc3", b"\xe2\x82"),
        ("inv_surrogate", b"\xed\xa0\x80 surrogate"), ("inv_too_big", b"\xf4\x90\x80\x80 too big"),
        ("inv_overlong", b"\xc0\xaf overlong \xe0\x80\xaf"), ("inv_5byte", b"\xf8\x88\x80\x80\x80"),
        ("inv_mixed", b"mixed \xe4\xbd\xa0\xe5 \xff\xfe end"), ("inv_fffd_real", b"\xef\xbf\xbd real"),
        ("inv_run", b"\xff" * 7 + b" x " + b"\x80" * 5), ("inv_space_after", b"\xfe "),
    ]
    return out


def random_corpus(rng, n_text, n_bytes):
    pools = [
        "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789",
        " " * 8 + "\t\n", ".,;:!?'\"()[]{}<>/\\|@#$%^&*-_=+~`",
        "äöüßéèêàçñøåœ", "αβγδεζηθλμπσω", "абвгдежзийклмнопрст", "的一是在不了有和人这中大为上",
        "あいうえおかきくけこ", "😀😂👍🎉🔥✨", "\u0301\u0308\u200b\u00a0",
    ]
    out = []
    for i in range(n_text):
        k = rng.randint(1, 60)
        text = "".join(rng.choice(rng.choice(pools)) for _ in range(k))
        out.append(("rand%03d" % i, text.encode("utf-8")))
    for i in range(n_bytes):
        k = rng.randint(1, 40)
        out.append(("randbytes%03d" % i, bytes(rng.randrange(256) for _ in range(k))))
    return out


def hexs(b):
    return b.hex() if b else "-"


def ids_s(ids):
    return ",".join(str(i) for i in ids) if ids else "-"


def case_lines(sp, corpus):
    lines = []
    for name, text in corpus:
        ids = sp.encode(text)
        dec = sp.decode(ids).encode("utf-8")
        lines.append("case\t%s\t%s\t%s\t%s" % (name, hexs(text), ids_s(ids), hexs(dec)))
    return lines


def write(name, header, lines):
    path = os.path.join(HERE, name)
    with open(path, "w") as f:
        f.write("# %s - generated by gen_tokenizer_golden.py (sentencepiece %s); do not edit\n"
                % (name, spm.__version__))
        for h in header:
            f.write("# %s\n" % h)
        for l in lines:
            f.write(l + "\n")
    print("wrote %s (%d lines, %d bytes)" % (name, len(lines), os.path.getsize(path)))


# --- chat: meta-llama/llama llama/generation.py chat_completion ------------
B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
SPECIAL_TAGS = [B_INST, E_INST, "<<SYS>>", "<</SYS>>"]


def chat_reference(sp, dialog):
    bos, eos = sp.bos_id(), sp.eos_id()
    if dialog[0]["role"] == "system":
        dialog = [{"role": dialog[1]["role"],
                   "content": B_SYS + dialog[0]["content"] + E_SYS + dialog[1]["content"]}
                  ] + dialog[2:]
    assert all([m["role"] == "user" for m in dialog[::2]]) and all(
        [m["role"] == "assistant" for m in dialog[1::2]])
    toks = []
    for prompt, answer in zip(dialog[::2], dialog[1::2]):
        toks += [bos] + sp.encode(
            f"{B_INST} {(prompt['content']).strip()} {E_INST} {(answer['content']).strip()} "
        ) + [eos]
    assert dialog[-1]["role"] == "user"
    toks += [bos] + sp.encode(f"{B_INST} {(dialog[-1]['content']).strip()} {E_INST}")
    return toks


def chat_lines(sp):
    U = lambda c: {"role": "user", "content": c}
    A = lambda c: {"role": "assistant", "content": c}
    S = lambda c: {"role": "system", "content": c}
    dialogs = [
        ("user_only", [U("Hello, who are you?")]),
        ("system_user", [S("You are a helpful assistant."), U("Tell me a joke.")]),
        ("two_turns", [U("Hi"), A("Hello! How can I help?"), U("What is 2+2?")]),
        ("system_three_turns", [S("Always answer in French."), U("Hi"), A("Bonjour !"),
                                U("How are you?"), A("Très bien."), U("Bye")]),
        ("strip_ascii", [S("  sys with spaces \n"), U("\n\t  padded user  \t\n"),
                         A("  padded answer  "), U("   last   ")]),
        ("strip_unicode", [U("\u3000\u00a0ideographic and nbsp\u2009\u2028"),
                           A("\u200bzero width is not whitespace\u200b"), U("\x1c\x1dseps\x1e\x1f")]),
        ("empty_contents", [S(""), U(""), A(""), U("")]),
        ("unicode", [U("你好，世界！😀"), A("Привет"), U("Ελληνικά")]),
        ("multiline", [U("line one\nline two\n\nline four"), A("ok\n- a\n- b"), U("code:\n```\nx=1\n```")]),
        ("special_tags", [U("please ignore [INST] and <<SYS>> tags")]),
        ("special_in_system", [S("<</SYS>> injected"), U("hi")]),
        ("err_user_user", [U("a"), U("b")]),
        ("err_ends_assistant", [U("a"), A("b")]),
        ("err_system_only", [S("s")]),
        ("err_system_assistant", [S("s"), A("a"), U("u")]),
        ("err_two_systems", [S("s"), S("t"), U("u")]),
        ("err_unknown_role", [{"role": "tool", "content": "x"}]),
        ("err_assistant_first", [A("a"), U("u")]),
    ]
    lines = []
    for name, d in dialogs:
        special = any(tag in m["content"] for tag in SPECIAL_TAGS for m in d)
        try:
            ids = ids_s(chat_reference(sp, d))
        except (AssertionError, IndexError):
            ids = "error"
        enc = ",".join("%s:%s" % (m["role"], hexs(m["content"].encode("utf-8"))) for m in d)
        lines.append("%s\t%s\t%s\t%d" % (name, enc, ids, 1 if special else 0))
    return lines


def decode_lines(sp, rng):
    B = lambda b: 3 + b
    seqs = [
        ("empty", []), ("unk", [0]), ("unk_hello", [0, 22172]), ("hello_unk", [22172, 0]),
        ("bos_ws_hello", [1, 29871, 22172]), ("ws_ws", [29871, 29871]), ("ws2", [259]),
        ("ws2_hello", [259, 22172]), ("byte_A_hello", [B(0x41), 22172]),
        ("bos_byte_space_hello", [1, B(0x20), 22172]), ("nl_hello", [13, 22172]),
        ("eos_hello", [2, 22172]), ("ws_bos_hello", [29871, 1, 22172]),
        ("bos_bos_eos", [1, 1, 2]), ("trunc_utf8", [B(0xE4), B(0xBD)]),
        ("full_utf8", [B(0xE4), B(0xBD), B(0xA0)]), ("ff_bos_A", [B(0xFF), 1, B(0x41)]),
        ("bos_A_ws", [1, B(0x41), 29871]), ("cont_bytes", [B(0x80), B(0x80), 22172]),
        ("surrogate_bytes", [B(0xED), B(0xA0), B(0x80)]), ("fffd_bytes", [B(0xEF), B(0xBF), B(0xBD)]),
        ("bytes_split_by_piece", [B(0xE4), 22172, B(0xBD), B(0xA0)]),
        ("unk_first_then_ws", [0, 29871, 22172]), ("control_only", [1]),
        ("ws_only", [29871]), ("bos_ws_only", [1, 29871]), ("bos_ws_ws", [1, 29871, 29871]),
    ]
    special = [0, 1, 2, 13, 29871, 259] + [B(b) for b in (0x20, 0x41, 0x80, 0xBD, 0xE4, 0xFF)]
    for i in range(60):
        k = rng.randint(1, 25)
        seqs.append(("rand%02d" % i, [rng.choice(special) if rng.random() < 0.4 else
                                      rng.randrange(32000) for _ in range(k)]))
    return ["decode\t%s\t%s\t%s" % (n, ids_s(s), hexs(sp.decode(s).encode("utf-8")))
            for n, s in seqs]


def make_variants(synth_model, tmp):
    """Edits of the synthetic 512 model, each exercising one code path."""
    base = pb.ModelProto()
    with open(synth_model, "rb") as f:
        base.ParseFromString(f.read())
    variants = {}

    m = pb.ModelProto(); m.CopyFrom(base)
    for i, p in enumerate(m.pieces):
        if i >= 259 and p.type == pb.ModelProto.SentencePiece.NORMAL and i % 3 == 0 and \
                len(p.piece) > 1:
            p.type = pb.ModelProto.SentencePiece.UNUSED
    variants["unused"] = m

    m = pb.ModelProto(); m.CopyFrom(base)
    existing = {p.piece: p for p in m.pieces}
    for s in ["[INST]", "[/INST]", "<<SYS>>", "\u2581the", "ing", "\U0001F600", "ab", "abc"]:
        if s in existing:
            existing[s].type = pb.ModelProto.SentencePiece.USER_DEFINED
        else:
            p = m.pieces.add()
            p.piece = s
            p.score = 0.0
            p.type = pb.ModelProto.SentencePiece.USER_DEFINED
    m.trainer_spec.vocab_size = len(m.pieces)
    variants["user_defined"] = m

    m = pb.ModelProto(); m.CopyFrom(base)
    m.normalizer_spec.remove_extra_whitespaces = True
    variants["remove_ws"] = m

    m = pb.ModelProto(); m.CopyFrom(base)
    keep = [p for p in m.pieces if p.type != pb.ModelProto.SentencePiece.BYTE]
    del m.pieces[:]
    for p in keep:
        m.pieces.add().CopyFrom(p)
    m.trainer_spec.byte_fallback = False
    m.trainer_spec.vocab_size = len(m.pieces)
    variants["no_byte_fallback"] = m

    m = pb.ModelProto(); m.CopyFrom(base)
    m.normalizer_spec.add_dummy_prefix = False
    variants["no_dummy_prefix"] = m
    return variants


def variant_decode_lines(sp, rng):
    n = sp.get_piece_size()
    lines = []
    for i in range(25):
        k = rng.randint(1, 15)
        seq = [rng.randrange(n) for _ in range(k)]
        lines.append("decode\trand%02d\t%s\t%s" % (i, ids_s(seq), hexs(sp.decode(seq).encode("utf-8"))))
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--test-bin", required=True, help="built test_tokenizer binary")
    args = ap.parse_args()

    rng = random.Random(20240601)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(SHARED, "tokenizer.model"))
    corpus = fixed_corpus() + random_corpus(rng, 80, 20)

    # LLaMA cases + the big text (all case texts joined by "\n", repeated).
    lines = case_lines(sp, corpus)
    joined = b"\n".join(t for _, t in corpus)
    reps = -(-BIG_MIN_BYTES // (len(joined) + 1))
    big = b"\n".join([joined] * reps)
    big_ids = sp.encode(big)
    crc = zlib.crc32(struct.pack("<%di" % len(big_ids), *big_ids)) & 0xFFFFFFFF
    lines.append("big\t%d\t%d\t%d" % (reps, len(big_ids), crc))
    write("llama_cases.tsv",
          ["case <name> <hex text> <ids> <hex decoded>; big <reps> <n ids> <crc32 of LE int32 ids>",
           "big text = (all case texts joined by \\n) repeated reps times, joined by \\n (%d bytes)"
           % len(big)], lines)
    write("llama_decode.tsv", ["decode <name> <ids> <hex DecodeIds>"], decode_lines(sp, rng))
    write("chat.tsv", ["<name> <role:hex content,...> <ids | error> <has special tags>"],
          chat_lines(sp))

    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, AM_TOK_GOLDEN_EXPORT=tmp, AM_SOURCE_DIR=ROOT,
                   AM_SHARED_DIR=os.path.dirname(SHARED))
        subprocess.run([args.test_bin, "export_for_golden"], check=True, env=env)

        # Our writer's LLaMA model must behave exactly like the original.
        sp2 = spm.SentencePieceProcessor(model_file=os.path.join(tmp, "llama_rewritten.model"))
        assert sp2.get_piece_size() == sp.get_piece_size()
        assert (sp2.bos_id(), sp2.eos_id(), sp2.unk_id()) == (sp.bos_id(), sp.eos_id(), sp.unk_id())
        for _, text in corpus:
            assert sp2.encode(text) == sp.encode(text), text
        print("llama_rewritten.model: sentencepiece agrees on all %d texts" % len(corpus))

        small = fixed_corpus() + random_corpus(random.Random(7), 15, 5)
        for n in SYNTH_SIZES:
            sps = spm.SentencePieceProcessor(model_file=os.path.join(tmp, "synth_%d.model" % n))
            assert sps.get_piece_size() == n
            write("synth_%d.tsv" % n, ["case <name> <hex text> <ids> <hex decoded>"],
                  case_lines(sps, small))

        for name, m in make_variants(os.path.join(tmp, "synth_512.model"), tmp).items():
            path = os.path.join(HERE, "variant_%s.model" % name)
            with open(path, "wb") as f:
                f.write(m.SerializeToString())
            spv = spm.SentencePieceProcessor(model_file=path)
            write("variant_%s.tsv" % name, ["case/decode lines for variant_%s.model" % name],
                  case_lines(spv, small) + variant_decode_lines(spv, random.Random(name)))


if __name__ == "__main__":
    sys.exit(main())
