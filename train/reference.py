#!/usr/bin/env python3
"""train/reference.py - the PyTorch reference of a trained model directory.

  reference.py verify MODEL_DIR HELDOUT_DIR [--bin build/bin]
      loads MODEL_DIR with our C code (`anymal encode --print-rows`, `anymal generate
      --dump-logits`) and with PyTorch (train/nets.py) and compares: the first 8 values of
      every modality-token row of a few held-out files of each modality, and every logit of a
      text prompt; fails above 1e-4 (the rows are printed to 6 decimals)
  reference.py answers MODEL_DIR HELDOUT_DIR OUT.tsv
      greedy answers of the PyTorch model for every example of HELDOUT_DIR/examples.tsv (as
      train/gen.py heldout wrote it): name, generated ids, the answer text, and per generated
      token the top logit and its margin over the runner-up (so the e2e test can say how close
      a differing step was)
"""
import argparse
import os
import subprocess
import sys

import numpy as np
import sentencepiece as spm
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import media  # noqa: E402
import nets  # noqa: E402

BOS, EOS = 1, 2


def read_examples(d):
    out = []
    with open(os.path.join(d, "examples.tsv")) as f:
        for line in f:
            name, mod, files, q, a = line.rstrip("\n").split("\t")
            out.append((name, mod, [tuple(x.split(":")[:2]) for x in files.split(";")], q, a))
    return out


@torch.no_grad()
def media_rows(model, kind, path):
    if kind == "image":
        return model.vision_rows(model.vision_features(media.pixels([media.read_png(path)])).unsqueeze(1))[0]
    if kind == "video":
        fr = media.sample_frames(media.read_gif(path), nets.VIDEO_FRAMES)
        return model.vision_rows(model.vision_features(media.pixels(list(fr))).unsqueeze(0))[0]
    if kind == "audio":
        return model.audio_rows(model.audio_features(torch.tensor(media.logmel(media.read_wav(path)))[None]))[0]
    if kind == "imu":
        return model.imu_rows(model.imu_features(torch.tensor(media.read_npy(path))[None]))[0]
    raise ValueError(kind)


@torch.no_grad()
def greedy(model, sp, rows, question, max_new=12):
    emb = model.llm.get_input_embeddings()
    x = torch.cat([emb(torch.tensor([BOS]))] + rows + [emb(torch.tensor(sp.encode(question)))], 0)[None]
    ids, tops = [], []
    for _ in range(max_new):
        lg = model.llm(inputs_embeds=x).logits[0, -1]
        v, i = lg.topk(2)
        t = int(i[0])
        tops.append((float(v[0]), float(v[0] - v[1])))
        if t == EOS:
            break
        ids.append(t)
        x = torch.cat([x, emb(torch.tensor([[t]]))], 1)
    return ids, tops


def c_rows(binary, model_dir, kind, path, n):
    out = subprocess.run([os.path.join(binary, "anymal"), "encode", "--modality", kind, "--model", model_dir,
                          "--threads", "1", "--print-rows", str(n), path], capture_output=True, text=True, check=True)
    return np.array([[float(v) for v in ln.split(":")[1].split()] for ln in out.stdout.splitlines()
                     if ln.strip().startswith("row")])


def verify(a):
    model = nets.load_dir(a.model)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(a.model, "tokenizer.model"))
    worst = 0.0
    seen = {}
    for name, mod, files, q, ans in read_examples(a.heldout):
        for kind, f in files:
            if seen.get(kind, 0) >= a.per_kind:
                continue
            seen[kind] = seen.get(kind, 0) + 1
            p = os.path.join(a.heldout, f)
            ref = media_rows(model, kind, p).numpy()
            got = c_rows(a.bin, a.model, kind, p, ref.shape[0])
            err = float(np.abs(ref[:, :8] - got).max())
            worst = max(worst, err)
            print(f"{kind} {f}: {ref.shape[0]} rows, max |C - PyTorch| over the printed values {err:.2e}")
    ids = [BOS] + sp.encode("A red star on the left.") + sp.encode("What is in the picture?")
    dump = os.path.join(a.heldout, "logits.f32")
    subprocess.run([os.path.join(a.bin, "anymal"), "generate", "--model", a.model, "--threads", "1",
                    "--prompt-ids", ",".join(map(str, ids)), "--max-tokens", "4", "--dump-logits", dump],
                   check=True, capture_output=True)
    got = np.fromfile(dump, dtype="<f4").reshape(-1, nets.LLM["vocab_size"])
    with torch.no_grad():
        seq = list(ids)
        for step in range(got.shape[0]):
            lg = model.llm(input_ids=torch.tensor([seq])).logits[0, -1].numpy()
            err = float(np.abs(lg - got[step]).max())
            worst = max(worst, err)
            print(f"llm step {step}: max |C - PyTorch| logit {err:.2e} (argmax {lg.argmax()} vs {got[step].argmax()})")
            seq.append(int(got[step].argmax()))
    print(f"worst {worst:.2e}")
    return 0 if worst < 1e-4 else 1


def answers(a):
    model = nets.load_dir(a.model)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(a.model, "tokenizer.model"))
    acc = {}
    with open(a.out, "w") as f:
        for name, mod, files, q, ans in read_examples(a.heldout):
            rows = [media_rows(model, kind, os.path.join(a.heldout, fn)) for kind, fn in files]
            ids, tops = greedy(model, sp, rows, q)
            text = sp.decode(ids)
            ok = text == ans
            acc.setdefault(mod, []).append(ok)
            f.write(f"{name}\t{' '.join(map(str, ids))}\t{text}\t"
                    + " ".join(f"{t:.4f}/{m:.4f}" for t, m in tops) + "\n")
    for mod, v in acc.items():
        print(f"{mod}: {sum(v)}/{len(v)} exact answers ({100 * sum(v) / len(v):.1f}%)")
    return 0


def main():
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["verify", "answers"])
    ap.add_argument("model")
    ap.add_argument("heldout")
    ap.add_argument("out", nargs="?")
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--per-kind", type=int, default=3)
    a = ap.parse_args()
    return verify(a) if a.what == "verify" else answers(a)


if __name__ == "__main__":
    sys.exit(main())
