#!/usr/bin/env python3
"""train/gen.py - the deterministic data generator of the embedded default model.

Every example is a prompt (media + a question) whose answer can be checked exactly:
  image   1-3 shapes (5 shapes, 8 colours): what is it, what shape, what colour, where, how many
  video   8 frames of one shape moving left/right/up/down: which way does it move
  audio   a digit spoken by espeak-ng (which number was said) or 1-5 beeps (how many beeps)
  imu     6-axis 200 Hz windows (5 s): walking, running, standing, jumping, turning
  mixed   an image and a spoken digit: is the number the same as the count of shapes
and a text description standing for the media (the LLM's text pretraining reads it).

Only numpy, Pillow and the Debian command espeak-ng; no PyTorch, so the e2e test can run it.
Everything is a pure function of (seed, index): examples are drawn from
numpy.random.default_rng([seed, modality, index]).  Training uses seeds < 1000; the
held-out set (tests/e2e) seed 1000, which training never reads.

  python3 train/gen.py heldout OUT_DIR --seed 1000 --per-modality 100
writes the media files and OUT_DIR/examples.tsv (id, modality, media files with the start of
their sha256, question, answer); the test compares it with its committed manifest.
  python3 train/gen.py demo models/default/demo
writes deploy/local's demo media and prompts.tsv (modality, client arguments, question, answer).
"""
import argparse
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import wave

import numpy as np
from PIL import Image, ImageDraw

IMG = 64  # image and video frame size (the ViT's image_size; no resize, no crop)
FRAMES = 8
SR = 48000  # audio rate (CLAP's); files are written at it, so nothing is resampled
CLIP = 10 * SR  # CLAP's 10 s window
IMU_HZ, IMU_N = 200, 1000

COLOURS = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 30),
    "green": (40, 170, 50),
    "blue": (40, 80, 220),
    "purple": (140, 50, 180),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
COLOUR_NAMES = list(COLOURS)
SHAPES = ["circle", "square", "triangle", "star", "cross"]
PLACES = {  # centre ranges (x0, x1, y0, y1) and the answer to "Where is ...?"
    "left": ((16, 20, 26, 38), "On the left."),
    "right": ((44, 48, 26, 38), "On the right."),
    "top": ((26, 38, 16, 20), "At the top."),
    "bottom": ((26, 38, 44, 48), "At the bottom."),
    "middle": ((30, 34, 30, 34), "In the middle."),
}
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
ACTIVITIES = ["walking", "running", "standing", "jumping", "turning"]
VOICES = ["en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us+f2", "en+f3", "en+m3"]
MODALITIES = ["image", "video", "audio", "imu", "mixed"]


def cap(s):
    return s[0].upper() + s[1:]


def a_(word):
    return ("an " if word[0] in "aeiou" else "a ") + word


def rng_for(seed, modality, index):
    return np.random.default_rng([seed, MODALITIES.index(modality), index])


# ---- images and video ----------------------------------------------------------


def shape_points(shape, cx, cy, r):
    if shape == "square":
        s = r * 0.85
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r * 0.95, cy + r * 0.8), (cx - r * 0.95, cy + r * 0.8)]
    if shape == "star":
        pts = []
        for k in range(10):
            a = -np.pi / 2 + k * np.pi / 5
            rr = r if k % 2 == 0 else r * 0.42
            pts.append((cx + rr * np.cos(a), cy + rr * np.sin(a)))
        return pts
    if shape == "cross":
        t = r * 0.34
        return [(cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t),
                (cx + r, cy + t), (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r),
                (cx - t, cy + t), (cx - r, cy + t), (cx - r, cy - t), (cx - t, cy - t)]
    raise ValueError(shape)


def draw_shape(draw, shape, cx, cy, r, fill):
    # Coordinates rounded to 1/8 px so the drawing does not depend on float noise.
    cx, cy, r = round(cx * 8) / 8, round(cy * 8) / 8, round(r * 8) / 8
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon([(round(x * 8) / 8, round(y * 8) / 8) for x, y in shape_points(shape, cx, cy, r)],
                     fill=fill)


def background(rng):
    g = int(rng.integers(105, 150))
    return (g, g, g)


def render(objs, bg):
    """objs: [(shape, colour, cx, cy, r)] -> (IMG, IMG, 3) uint8."""
    im = Image.new("RGB", (IMG, IMG), bg)
    d = ImageDraw.Draw(im)
    for shape, colour, cx, cy, r in objs:
        draw_shape(d, shape, cx, cy, r, COLOURS[colour])
    return np.asarray(im, dtype=np.uint8).copy()


def scatter(rng, n):
    """n small shapes anywhere, apart: [(shape, colour, cx, cy, r)]."""
    objs = []
    while len(objs) < n:
        r = float(rng.uniform(6, 9))
        cx, cy = float(rng.uniform(r + 2, IMG - r - 2)), float(rng.uniform(r + 2, IMG - r - 2))
        if all((cx - o[2]) ** 2 + (cy - o[3]) ** 2 > (r + o[4] + 3) ** 2 for o in objs):
            objs.append((SHAPES[int(rng.integers(5))], COLOUR_NAMES[int(rng.integers(8))], cx, cy, r))
    return objs


def image_scene(rng):
    """One random scene: (objs, count, place or None)."""
    n = int(rng.choice([1, 1, 1, 2, 3]))
    if n == 1:
        place = PLACES_LIST[int(rng.integers(len(PLACES_LIST)))]
        x0, x1, y0, y1 = PLACES[place][0]
        obj = (SHAPES[int(rng.integers(5))], COLOUR_NAMES[int(rng.integers(8))],
               float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1)), float(rng.uniform(12, 15)))
        return [obj], 1, place
    return scatter(rng, n), n, None


PLACES_LIST = list(PLACES)


def image_example(rng):
    objs, n, place = image_scene(rng)
    pixels = render(objs, background(rng))
    if n == 1:
        shape, colour = objs[0][0], objs[0][1]
        desc = f"{cap(a_(colour))} {shape} {PLACES[place][1][0].lower() + PLACES[place][1][1:-1]}."
        qa = [("What is in the picture?", f"{cap(a_(colour))} {shape}."),
              ("What shape is it?", f"{cap(a_(shape))}."),
              ("What colour is it?", f"{cap(colour)}."),
              (f"Where is the {shape}?", PLACES[place][1]),
              ("How many shapes are there?", "One.")]
        q, a = qa[int(rng.integers(len(qa)))]
    else:
        desc = f"{cap(NUMBERS[n])} shapes."
        q, a = "How many shapes are there?", f"{cap(NUMBERS[n])}."
    return {"pixels": pixels, "count": n, "desc": desc, "question": q, "answer": a}


def video_example(rng):
    direction = list(DIRECTIONS)[int(rng.integers(4))]
    dx, dy = DIRECTIONS[direction]
    shape, colour = SHAPES[int(rng.integers(5))], COLOUR_NAMES[int(rng.integers(8))]
    r = float(rng.uniform(7, 10))
    travel = float(rng.uniform(24, 36))
    along0 = float(rng.uniform(r + 2, IMG - r - 2 - travel))  # start along the motion axis
    across = float(rng.uniform(r + 2, IMG - r - 2))
    bg = background(rng)
    frames = []
    for f in range(FRAMES):
        p = along0 + travel * f / (FRAMES - 1)
        if dx < 0 or dy < 0:
            p = IMG - p
        cx, cy = (p, across) if dx else (across, p)
        frames.append(render([(shape, colour, cx, cy, r)], bg))
    return {"frames": np.stack(frames), "desc": f"{cap(a_(colour))} {shape} moves {direction}.",
            "question": "Which way does it move?", "answer": f"{cap(direction)}.",
            "palette": [bg, COLOURS[colour]]}


def write_png(path, pixels):
    Image.fromarray(pixels, "RGB").save(path, format="PNG", optimize=False)


def write_gif(path, frames, palette):
    """Palette GIF: the two colours exactly, so FFmpeg decodes the drawn pixels unchanged."""
    pal = [c for rgb in palette for c in rgb]
    ims = []
    for fr in frames:
        idx = np.zeros(fr.shape[:2], np.uint8)
        idx[(fr != np.array(palette[0], np.uint8)).any(axis=2)] = 1
        im = Image.fromarray(idx, "P")
        im.putpalette(pal + [0] * (768 - len(pal)))
        ims.append(im)
    ims[0].save(path, format="GIF", save_all=True, append_images=ims[1:], duration=125, loop=0,
                optimize=False, disposal=1)


# ---- audio ------------------------------------------------------------------------

_speech_cache = {}


def espeak(text, voice, speed, pitch):
    key = (text, voice, speed, pitch)
    if key not in _speech_cache:
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "s.wav")
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", p, text],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with wave.open(p) as w:
                rate = w.getframerate()
                x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64) / 32768
        # trim silence, then linear interpolation to 48 kHz (any fixed resampler will do:
        # the file is what both the model and the reference read)
        nz = np.nonzero(np.abs(x) > 0.01)[0]
        x = x[max(nz[0] - 200, 0): nz[-1] + 200] if len(nz) else x
        t = np.arange(int(len(x) * SR / rate)) * (rate / SR)
        _speech_cache[key] = np.interp(t, np.arange(len(x)), x)
    return _speech_cache[key]


def to_int16(x):
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def speech_clip(rng, digit, voice=None, speed=None, pitch=None):
    voice = VOICES[int(rng.integers(len(VOICES)))] if voice is None else voice
    speed = int(rng.integers(12, 20)) * 10 if speed is None else speed
    pitch = int(rng.integers(2, 9)) * 10 if pitch is None else pitch
    x = espeak(NUMBERS[digit], voice, speed, pitch)
    x = x / max(np.abs(x).max(), 1e-6) * float(rng.uniform(0.3, 0.8))
    x = x + rng.normal(0, 0.003, len(x))
    return to_int16(x)  # shorter than 10 s: CLAP repeats it (repeatpad)


def beep_clip(rng, n):
    out = np.zeros(CLIP)
    f = float(rng.uniform(500, 1500))
    # beeps of one length (the gaps vary): how much of the clip sounds tells the count, which a
    # mean over HTSAT's tokens can carry; with lengths varying too it could not
    dur, gap = 0.35, float(rng.uniform(0.2, 0.4))
    t0 = float(rng.uniform(0.2, 1.0))
    amp = float(rng.uniform(0.2, 0.6))
    m = int(dur * SR)
    env = np.minimum(1, np.minimum(np.arange(m), m - 1 - np.arange(m)) / (0.01 * SR))
    for k in range(n):
        s = int((t0 + k * (dur + gap)) * SR)
        out[s:s + m] += amp * env * np.sin(2 * np.pi * f * np.arange(m) / SR)
    out += rng.normal(0, 0.003, CLIP)
    return to_int16(out)  # exactly 10 s: nothing repeated


def audio_example(rng):
    if rng.random() < 0.5:
        d = int(rng.integers(10))
        return {"samples": speech_clip(rng, d), "desc": f"A voice says {NUMBERS[d]}.",
                "question": "Which number was said?", "answer": f"{cap(NUMBERS[d])}."}
    n = int(rng.integers(1, 6))
    return {"samples": beep_clip(rng, n), "desc": f"{cap(NUMBERS[n])} beep{'s' if n > 1 else ''}.",
            "question": "How many beeps are there?", "answer": f"{cap(NUMBERS[n])}."}


def write_wav(path, samples):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(samples.astype("<i2").tobytes())


# ---- IMU --------------------------------------------------------------------------


def imu_signal(rng, activity):
    t = np.arange(IMU_N) / IMU_HZ
    tilt = rng.normal(0, 0.15, 2)
    g = 9.81 * np.array([np.sin(tilt[0]), np.sin(tilt[1]), np.cos(tilt[0]) * np.cos(tilt[1])])
    acc = np.tile(g, (IMU_N, 1))
    gyr = np.zeros((IMU_N, 3))
    ph = rng.uniform(0, 2 * np.pi, 3)
    if activity in ("walking", "running", "turning"):
        f, a, w = {"walking": (rng.uniform(1.6, 2.2), rng.uniform(1.5, 3.0), 0.4),
                   "running": (rng.uniform(2.6, 3.4), rng.uniform(5.0, 9.0), 1.2),
                   "turning": (rng.uniform(1.4, 2.0), rng.uniform(0.5, 1.5), 0.2)}[activity]
        acc[:, 2] += a * np.sin(2 * np.pi * f * t + ph[0])
        acc[:, 0] += 0.5 * a * np.sin(np.pi * f * t + ph[1])
        acc[:, 1] += 0.3 * a * np.sin(2 * np.pi * f * t + ph[2])
        gyr[:, 0] += w * np.sin(np.pi * f * t + ph[1])
        gyr[:, 1] += 0.5 * w * np.sin(2 * np.pi * f * t + ph[2])
    if activity == "turning":
        gyr[:, 2] += rng.choice([-1, 1]) * rng.uniform(1.0, 2.0)
    if activity == "jumping":
        period = rng.uniform(0.8, 1.2)
        phase = (t + rng.uniform(0, period)) % period
        air = phase < 0.35
        acc[air] *= 0.1
        land = (phase >= 0.35) & (phase < 0.42)
        acc[land, 2] += rng.uniform(15, 25)
        gyr[:, 1] += 0.3 * np.sin(2 * np.pi * t / period)
    acc += rng.normal(0, 0.1, acc.shape)
    gyr += rng.normal(0, 0.03, gyr.shape)
    return np.concatenate([acc, gyr], axis=1).astype(np.float32)


def imu_example(rng):
    act = ACTIVITIES[int(rng.integers(5))]
    return {"imu": imu_signal(rng, act), "desc": f"The person is {act}.",
            "question": "What is the person doing?", "answer": f"{cap(act)}."}


def write_npy(path, a):
    np.save(path, np.ascontiguousarray(a, dtype="<f4"))


# ---- mixed -------------------------------------------------------------------------


def mixed_example(rng):
    n = int(rng.integers(1, 4))
    same = rng.random() < 0.5
    d = n if same else int(rng.choice([k for k in (1, 2, 3) if k != n]))
    pixels = render(scatter(rng, n), background(rng))
    return {"pixels": pixels, "samples": speech_clip(rng, d), "count": n,
            "desc": f"{cap(NUMBERS[n])} shape{'s' if n > 1 else ''}.",
            "desc2": f"A voice says {NUMBERS[d]}.",
            "question": "Is the number the same as the count of shapes?",
            "answer": "Yes." if same else "No."}


MAKERS = {"image": image_example, "video": video_example, "audio": audio_example,
          "imu": imu_example, "mixed": mixed_example}


def example(seed, modality, index):
    return MAKERS[modality](rng_for(seed, modality, index))


def text_only(rng):
    """A text-only Q&A: the description of a random example of any modality, then its question."""
    m = MODALITIES[int(rng.integers(len(MODALITIES)))]
    ex = MAKERS[m](rng) if m not in ("audio", "mixed") else None
    if ex is None:  # no espeak for text: the same text, without the audio
        if m == "audio":
            if rng.random() < 0.5:
                d = int(rng.integers(10))
                ex = {"desc": f"A voice says {NUMBERS[d]}.", "question": "Which number was said?",
                      "answer": f"{cap(NUMBERS[d])}."}
            else:
                n = int(rng.integers(1, 6))
                ex = {"desc": f"{cap(NUMBERS[n])} beep{'s' if n > 1 else ''}.",
                      "question": "How many beeps are there?", "answer": f"{cap(NUMBERS[n])}."}
        else:
            n, d = int(rng.integers(1, 4)), int(rng.integers(1, 4))
            ex = {"desc": f"{cap(NUMBERS[n])} shape{'s' if n > 1 else ''}.",
                  "desc2": f"A voice says {NUMBERS[d]}.",
                  "question": "Is the number the same as the count of shapes?",
                  "answer": "Yes." if n == d else "No."}
    return [ex["desc"]] + ([ex["desc2"]] if "desc2" in ex else []), ex["question"], ex["answer"]


# ---- files --------------------------------------------------------------------------


def write_example(out, name, modality, ex):
    files = []
    if modality == "image" or modality == "mixed":
        files.append(("image", f"{name}.png"))
        write_png(os.path.join(out, files[-1][1]), ex["pixels"])
    if modality == "video":
        files.append(("video", f"{name}.gif"))
        write_gif(os.path.join(out, files[-1][1]), ex["frames"], ex["palette"])
    if modality == "audio" or modality == "mixed":
        files.append(("audio", f"{name}.wav"))
        write_wav(os.path.join(out, files[-1][1]), ex["samples"])
    if modality == "imu":
        files.append(("imu", f"{name}.npy"))
        write_npy(os.path.join(out, files[-1][1]), ex["imu"])
    return files


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def demo(out):
    """The demo media of deploy/local and the README (models/default/demo), each with its prompt
    and the answer the model must give."""
    rng = np.random.default_rng([2000, 0])
    bg = (128, 128, 128)
    write_png(os.path.join(out, "red_star.png"), render([("star", "red", 32, 32, 12)], bg))
    write_png(os.path.join(out, "three_shapes.png"),
              render([("circle", "blue", 16, 18, 7), ("square", "yellow", 46, 22, 7),
                      ("triangle", "green", 30, 46, 8)], bg))
    frames = [render([("circle", "blue", 14 + 36 * f / (FRAMES - 1), 30, 8)], bg) for f in range(FRAMES)]
    write_gif(os.path.join(out, "moving.gif"), frames, [bg, COLOURS["blue"]])
    write_wav(os.path.join(out, "seven.wav"), speech_clip(rng, 7, "en-us", 150, 50))
    write_wav(os.path.join(out, "three.wav"), speech_clip(rng, 3, "en-gb", 150, 50))
    write_npy(os.path.join(out, "running.npy"), imu_signal(rng, "running"))
    with open(os.path.join(out, "prompts.tsv"), "w") as f:
        f.write("image\t--image red_star.png\tWhat is in the picture?\tA red star.\n"
                "video\t--video moving.gif\tWhich way does it move?\tRight.\n"
                "audio\t--audio seven.wav\tWhich number was said?\tSeven.\n"
                "imu\t--imu running.npy\tWhat is the person doing?\tRunning.\n"
                "mixed\t--image three_shapes.png --audio three.wav\t"
                "Is the number the same as the count of shapes?\tYes.\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["heldout", "demo"])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--per-modality", type=int, default=100)
    ap.add_argument("--modalities", default=",".join(MODALITIES))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if a.what == "demo":
        return demo(a.out)
    with open(os.path.join(a.out, "examples.tsv"), "w") as tsv:
        for m in a.modalities.split(","):
            for i in range(a.per_modality):
                name = f"{m}{i:03d}"
                ex = example(a.seed, m, i)
                files = write_example(a.out, name, m, ex)
                media = ";".join(f"{k}:{f}:{sha256(os.path.join(a.out, f))[:16]}" for k, f in files)
                tsv.write(f"{name}\t{m}\t{media}\t{ex['question']}\t{ex['answer']}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
