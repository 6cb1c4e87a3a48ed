#!/usr/bin/env python3
"""train/train.py - trains the embedded default model (models/default) the way AnyMAL is trained.

  0. tokenizer: SentencePiece BPE (vocab 512, byte fallback, identity normalizer) on the
     generator's text
  1. pretrain the LLM (LLaMA-2 decoder) on text: descriptions of scenes/sounds/motions and
     their questions and answers
  2. train each encoder contrastively (CLIP-style) against the frozen LLM's text embedding of
     the media's description (no pretrained encoders exist here)
  3. freeze the LLM and the encoders; train only the projectors on (media, question, answer)
     pairs: AnyMAL's stage 1 (modality alignment)
  4. a short instruction-tuning pass: the LLM and the projectors together, encoders frozen
Seeded and single-process: torch.set_num_threads(1) (--threads); seeds 1 (data) and 0 (init); seed 500 is
the validation set printed at the end; seed 1000 (the e2e test's held-out set) is never read.

  /work/venv-model/bin/python train/train.py --out models/default
"""
import argparse
import math
import os
import random
import sys
import time

import numpy as np
import sentencepiece as spm
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen  # noqa: E402
import media  # noqa: E402
import nets  # noqa: E402

BOS, EOS = 1, 2
T0 = time.time()


def log(msg):
    print(f"[{time.time() - T0:7.1f} s] {msg}", flush=True)


# ---- tokenizer -------------------------------------------------------------------------
def train_tokenizer(out_dir):
    rng = np.random.default_rng([1, 99])
    lines = set()
    for _ in range(20000):
        d, q, a = gen.text_only(rng)
        lines.add(" ".join(d + [q, a]))
    corpus = os.path.join(out_dir, "corpus.tmp")
    with open(corpus, "w") as f:
        f.write("\n".join(sorted(lines)) + "\n")
    prefix = os.path.join(out_dir, "tokenizer")
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=prefix, model_type="bpe", vocab_size=nets.LLM["vocab_size"],
        byte_fallback=True, character_coverage=1.0, normalization_rule_name="identity",
        add_dummy_prefix=True, remove_extra_whitespaces=False, split_digits=True, bos_id=1, eos_id=2,
        unk_id=0, pad_id=-1, num_threads=1, minloglevel=2)
    os.remove(corpus)
    os.remove(prefix + ".vocab")
    return prefix + ".model"


class Tok:
    def __init__(self, path):
        self.sp = spm.SentencePieceProcessor(model_file=path)
        self.cache = {}

    def __call__(self, s):  # one text segment, as a shard leader encodes it (dummy prefix, no BOS)
        if s not in self.cache:
            self.cache[s] = self.sp.encode(s)
        return self.cache[s]


# ---- batches ---------------------------------------------------------------------------
def text_batch(tok, items):
    """items: (segments, question, answer) -> ids (B, T), loss mask (B, T) over next tokens."""
    seqs, masks = [], []
    for segs, q, a in items:
        ctx = [BOS] + [t for s in segs for t in tok(s)] + tok(q)
        ans = tok(a) + [EOS]
        seqs.append(ctx + ans)
        masks.append([0.3] * (len(ctx) - 1) + [1.0] * len(ans))  # LM on the context, mostly the answer
    T = max(map(len, seqs))
    ids = torch.zeros(len(seqs), T, dtype=torch.long)
    mask = torch.zeros(len(seqs), T - 1)
    for i, (s, m) in enumerate(zip(seqs, masks)):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(m)] = torch.tensor(m)
    return ids, mask


def lm_loss(logits, ids, mask):
    lp = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
    return (lp * mask.reshape(-1)).sum() / mask.sum()


def media_batch(model, tok, rows_list, questions, answers):
    """rows_list: list of (B, n_i, C) media rows in prompt order -> (embeds, ids, mask) where the
    loss covers the answer and EOS only."""
    emb = model.llm.get_input_embeddings()
    B = len(questions)
    n_media = sum(r.shape[1] for r in rows_list)
    seqs = [tok(q) + tok(a) + [EOS] for q, a in zip(questions, answers)]
    T = max(map(len, seqs))
    ids = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, 1 + n_media + T - 1)
    for i, (s, q) in enumerate(zip(seqs, questions)):
        ids[i, :len(s)] = torch.tensor(s)
        nq = len(tok(q))
        # position p predicts token p+1: answer tokens sit at 1 + n_media + nq ...
        mask[i, n_media + nq: n_media + len(s)] = 1.0
    x = torch.cat([emb(torch.full((B, 1), BOS))] + list(rows_list) + [emb(ids)], 1)
    target = torch.cat([torch.full((B, 1 + n_media), -1, dtype=torch.long), ids], 1)
    return x, target, mask


def media_loss(model, x, target, mask):
    logits = model.llm(inputs_embeds=x[:, :-1]).logits
    tgt = target[:, 1:].clamp(min=0)
    lp = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), reduction="none")
    return (lp * mask.reshape(-1)).sum() / mask.sum()


def cosine_lr(opt, base, step, total, warm=30):
    lr = base * min(1.0, (step + 1) / warm) * (0.5 + 0.5 * math.cos(math.pi * min(step, total) / total))
    for g in opt.param_groups:
        g["lr"] = lr


# ---- data ------------------------------------------------------------------------------
class Data:
    """The training examples of one seed, with their encoder inputs."""

    def __init__(self, seed, n):
        self.ex = {m: [gen.example(seed, m, i) for i in range(n[m])] for m in gen.MODALITIES}
        log(f"seed {seed}: generated " + ", ".join(f"{len(v)} {k}" for k, v in self.ex.items()))
        self.img = media.pixels([e["pixels"] for e in self.ex["image"]])
        self.mix_img = media.pixels([e["pixels"] for e in self.ex["mixed"]])
        self.vid = media.pixels([f for e in self.ex["video"] for f in media.sample_frames(e["frames"], nets.VIDEO_FRAMES)])
        mel = lambda xs: torch.cat([media.logmel_batch(xs[i:i + 64]) for i in range(0, len(xs), 64)])
        self.mel = mel([e["samples"] for e in self.ex["audio"]])
        self.mix_mel = mel([e["samples"] for e in self.ex["mixed"]])
        self.imu = torch.tensor(np.stack([e["imu"] for e in self.ex["imu"]]))
        log(f"seed {seed}: log-mel and pixels ready")


@torch.no_grad()
def features(model, d, bs=64):
    """Frozen encoder outputs for every example (stages 3 and 4 never run the encoders again)."""
    model.eval()
    cat = lambda f, x: torch.cat([f(x[i:i + bs]) for i in range(0, len(x), bs)])
    out = {"image": cat(model.vision_features, d.img).unsqueeze(1),
           "mixed_img": cat(model.vision_features, d.mix_img).unsqueeze(1),
           "audio": cat(model.audio_features, d.mel),
           "mixed_aud": cat(model.audio_features, d.mix_mel),
           "imu": cat(model.imu_features, d.imu)}
    v = cat(model.vision_features, d.vid)
    out["video"] = v.view(len(d.ex["video"]), nets.VIDEO_FRAMES, *v.shape[1:])
    return out


def rows_for(model, feats, m, idx):
    if m == "image" or m == "video":
        return [model.vision_rows(feats[m][idx])]
    if m == "audio":
        return [model.audio_rows(feats["audio"][idx])]
    if m == "imu":
        return [model.imu_rows(feats["imu"][idx])]
    return [model.vision_rows(feats["mixed_img"][idx]), model.audio_rows(feats["mixed_aud"][idx])]


# ---- stages ----------------------------------------------------------------------------
def stage_text(model, tok, steps, bs, lr):
    rng = np.random.default_rng([1, 1])
    opt = torch.optim.AdamW(model.llm.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    model.train()
    for step in range(steps):
        ids, mask = text_batch(tok, [gen.text_only(rng) for _ in range(bs)])
        cosine_lr(opt, lr, step, steps)
        loss = lm_loss(model.llm(input_ids=ids).logits, ids, mask)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.llm.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"stage 1 text step {step}: loss {loss.item():.4f}")


@torch.no_grad()
def text_embed(model, tok, texts):
    """The frozen LLM's text embedding: mean of its final (normed) hidden states over the text."""
    model.llm.eval()
    out = []
    for t in texts:
        ids = torch.tensor([[BOS] + tok(t)])
        h = model.llm.model(input_ids=ids).last_hidden_state[0, 1:]
        out.append(h.mean(0))
    return torch.stack(out)


def stage_contrastive(model, tok, d, steps, bs, lr):
    C = nets.LLM["hidden_size"]
    E = 64
    jobs = {  # modality: (encoder params, pooled-feature fn, inputs, descriptions)
        "image": (model.vision, lambda x: model.vision(pixel_values=x).pooler_output,
                  torch.cat([d.img, d.mix_img]), [e["desc"] for e in d.ex["image"] + d.ex["mixed"]]),
        "audio": (model.audio, model.audio_features, torch.cat([d.mel, d.mix_mel]),
                  [e["desc"] for e in d.ex["audio"]] + [e["desc2"] for e in d.ex["mixed"]]),
        "imu": (model.imu, model.imu_features, d.imu, [e["desc"] for e in d.ex["imu"]]),
    }
    width = {"image": nets.VISION["hidden_size"], "audio": nets.AUDIO["projection_dim"],
             "imu": nets.IMU["size_embeddings"]}
    g = torch.Generator().manual_seed(7)
    for m, (enc, pool, x, descs) in jobs.items():
        classes = sorted(set(descs))
        label = torch.tensor([classes.index(s) for s in descs])
        temb = text_embed(model, tok, classes)  # (K, C), frozen
        head_e = torch.nn.Linear(width[m], E)
        head_t = torch.nn.Linear(C, E)
        params = list(enc.parameters()) + list(head_e.parameters()) + list(head_t.parameters())
        opt = torch.optim.AdamW(params, lr=lr[m], weight_decay=0.01)
        enc.train()
        n = steps[m]
        for step in range(n):
            idx = torch.randint(len(x), (bs[m],), generator=g)
            ze = F.normalize(head_e(pool(x[idx])), dim=-1)
            zt = F.normalize(head_t(temb), dim=-1)
            logits = ze @ zt.T / 0.07  # every description is a candidate (all negatives)
            # the CLIP loss both ways: each example's description among all of them, and each
            # description of the batch among the batch's examples (same description = positive)
            y = label[idx]
            loss_e = F.cross_entropy(logits, y)
            same = (y[:, None] == y[None, :]).float()
            lt = (ze @ F.normalize(head_t(temb[y]), dim=-1).T / 0.07).T
            loss_t = -(same / same.sum(1, keepdim=True) * lt.log_softmax(-1)).sum(1).mean()
            loss = 0.5 * (loss_e + loss_t)
            cosine_lr(opt, lr[m], step, n, warm=20)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if step % 50 == 0 or step == n - 1:
                acc = (logits.argmax(-1) == y).float().mean().item()
                log(f"stage 2 {m} step {step}: loss {loss.item():.4f} batch top-1 {acc:.2f}")
        enc.eval()


def stage_align(model, tok, d, feats, steps, bs, lr, params, tag):
    # video and images are the hard ones (motion, shapes and counts): they get most steps
    order = ["image", "video", "audio", "image", "mixed", "video", "image", "audio", "imu", "image", "video",
             "mixed"]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(11 if tag == "3" else 13)
    trng = np.random.default_rng([1, 3])
    for step in range(steps):
        m = order[step % len(order)]
        ex = d.ex[m]
        idx = torch.randint(len(ex), (bs,), generator=g)
        rows = rows_for(model, feats, m, idx)
        x, tgt, mask = media_batch(model, tok, rows, [ex[i]["question"] for i in idx],
                                   [ex[i]["answer"] for i in idx])
        loss = media_loss(model, x, tgt, mask)
        if tag == "4":  # keep the text skill: a text batch every step
            ids, tmask = text_batch(tok, [gen.text_only(trng) for _ in range(bs // 4)])
            loss = loss + 0.3 * lm_loss(model.llm(input_ids=ids).logits, ids, tmask)
        cosine_lr(opt, lr, step, steps)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"stage {tag} step {step} ({m}): loss {loss.item():.4f}")


# ---- greedy answers (the reference decoder) ------------------------------------------------
@torch.no_grad()
def greedy(model, tok, rows, question, max_new=12):
    """rows: list of (n_i, C) media rows -> generated ids (EOS excluded)."""
    emb = model.llm.get_input_embeddings()
    x = torch.cat([emb(torch.tensor([BOS]))] + list(rows) + [emb(torch.tensor(tok(question)))], 0)[None]
    out = []
    for _ in range(max_new):
        t = int(model.llm(inputs_embeds=x).logits[0, -1].argmax())
        if t == EOS:
            break
        out.append(t)
        x = torch.cat([x, emb(torch.tensor([[t]]))], 1)
    return out


@torch.no_grad()
def evaluate(model, tok, d, feats, n=60):
    model.eval()
    res = {}
    for m in gen.MODALITIES:
        ok = 0
        k = min(n, len(d.ex[m]))
        for i in range(k):
            rows = [r[0] for r in rows_for(model, feats, m, torch.tensor([i]))]
            got = tok.sp.decode(greedy(model, tok, rows, d.ex[m][i]["question"]))
            ok += got == d.ex[m][i]["answer"]
        res[m] = ok / k
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="models/default")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies data sizes and steps (0.1: a smoke run)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared 2-core machine 2 threads ran 4x slower, "
                         "and another count changes the rounding, so the weights)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    random.seed(0)
    os.makedirs(a.out, exist_ok=True)
    s = lambda v: max(2, int(v * a.scale))
    tok = Tok(train_tokenizer(a.out))
    log(f"tokenizer: {tok.sp.get_piece_size()} pieces")
    model = nets.Anymal()
    stage_text(model, tok, steps=s(800), bs=64, lr=3e-3)
    d = Data(1, {"image": s(3000), "video": s(1000), "audio": s(1500), "imu": s(1000), "mixed": s(1000)})
    stage_contrastive(model, tok, d, steps={"image": s(900), "audio": s(250), "imu": s(150)},
                      bs={"image": 64, "audio": 24, "imu": 64}, lr={"image": 2e-3, "audio": 2e-3, "imu": 3e-3})
    for p in model.parameters():
        p.requires_grad_(False)
    feats = features(model, d)
    log("frozen encoder features computed")
    proj = list(model.vision_proj.parameters()) + list(model.audio_proj.parameters()) + \
        list(model.imu_proj.parameters())
    for p in proj:
        p.requires_grad_(True)
    model.eval()  # no dropout anywhere; BatchNorm keeps its running statistics
    stage_align(model, tok, d, feats, steps=s(3000), bs=32, lr=2e-3, params=proj, tag="3")
    v = Data(500, {m: s(60) for m in gen.MODALITIES})
    vfeats = features(model, v)
    log(f"after stage 3 (projectors only), validation exact answers: {evaluate(model, tok, v, vfeats)}")
    for p in model.llm.parameters():
        p.requires_grad_(True)
    stage_align(model, tok, d, feats, steps=s(500), bs=32, lr=5e-4, params=proj + list(model.llm.parameters()),
                tag="4")
    log(f"after stage 4 (instruction tuning), validation exact answers: {evaluate(model, tok, v, vfeats)}")
    nets.save_dir(model, a.out, os.path.join(a.out, "tokenizer.model"))
    log(f"wrote {a.out}")


if __name__ == "__main__":
    main()
