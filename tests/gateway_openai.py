#!/usr/bin/env python3
"""tests/gateway_openai.py - the openai SDK as the client of anymal-gateway (run by
tests/test_gateway_openai.sh with GW and MODEL set; the gateway wants API key test-key)."""
import base64
import os
import sys

import openai

GW, MODEL = os.environ["GW"], os.environ["MODEL"]
ROOT = os.path.join(os.path.dirname(__file__), "golden")
client = openai.OpenAI(base_url=GW + "/v1", api_key="test-key", max_retries=0, timeout=30)
fails = 0


def check(ok, what):
    global fails
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    fails += 0 if ok else 1


models = client.models.list()
check([m.id for m in models.data] == [MODEL], "models.list: %s" % [m.id for m in models.data])

r = client.chat.completions.create(model=MODEL, max_tokens=8, seed=1, temperature=0.7, top_p=0.9,
                                   messages=[{"role": "system", "content": "Be brief."},
                                             {"role": "user", "content": "Hello"}])
check(r.object == "chat.completion" and r.choices[0].message.role == "assistant"
      and r.choices[0].finish_reason in ("length", "stop") and r.usage.completion_tokens >= 1
      and r.usage.prompt_tokens > 10, "chat: %r, usage %s" % (r.choices[0].message.content[:30], r.usage))

pieces, usage, finish = [], None, None
for ch in client.chat.completions.create(model=MODEL, max_tokens=10, stream=True,
                                         stream_options={"include_usage": True},
                                         messages=[{"role": "user", "content": "Hello"}]):
    if ch.usage:
        usage = ch.usage
    for c in ch.choices:
        pieces.append(c.delta.content or "")
        finish = c.finish_reason or finish
check(len(pieces) >= 3 and "".join(pieces) and finish == "length" and usage.completion_tokens == 10,
      "chat streamed: %d chunks, finish %s, usage %s" % (len(pieces), finish, usage))

greedy = [client.chat.completions.create(model=MODEL, max_tokens=6, temperature=0,
                                         messages=[{"role": "user", "content": "Same"}]).choices[0].message.content
          for _ in range(2)]
check(greedy[0] == greedy[1], "greedy answers repeat")

img = base64.b64encode(open(os.path.join(ROOT, "vision/images/land_q90.jpg"), "rb").read()).decode()
r = client.chat.completions.create(model=MODEL, max_tokens=6, messages=[{"role": "user", "content": [
    {"type": "text", "text": "Look:"},
    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + img}},
    {"type": "text", "text": "What is it?"}]}])
r_txt = client.chat.completions.create(model=MODEL, max_tokens=6, messages=[{"role": "user", "content": "Look: What is it?"}])
check(r.usage.prompt_tokens > r_txt.usage.prompt_tokens,
      "image part: %d prompt tokens (text alone %d)" % (r.usage.prompt_tokens, r_txt.usage.prompt_tokens))

wav = base64.b64encode(open(os.path.join(ROOT, "audio/speech48.wav"), "rb").read()).decode()
r = client.chat.completions.create(model=MODEL, max_tokens=6, messages=[{"role": "user", "content": [
    {"type": "text", "text": "Listen:"},
    {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}}]}])
r_txt = client.chat.completions.create(model=MODEL, max_tokens=6, messages=[{"role": "user", "content": "Listen:"}])
check(r.usage.prompt_tokens > r_txt.usage.prompt_tokens and r.choices[0].finish_reason,
      "audio part: %d prompt tokens (text alone %d)" % (r.usage.prompt_tokens, r_txt.usage.prompt_tokens))

c = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=5)
check(c.object == "text_completion" and c.usage.completion_tokens == 5, "completions: %r" % c.choices[0].text)


def raises(exc, what, fn):
    try:
        fn()
        check(False, what + ": no exception")
    except exc as e:
        check(True, "%s -> %s (%s)" % (what, type(e).__name__, getattr(e, "status_code", "")))
    except Exception as e:  # noqa: BLE001
        check(False, "%s -> %s, want %s" % (what, type(e).__name__, exc.__name__))


raises(openai.NotFoundError, "unknown model",
       lambda: client.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "x"}]))
raises(openai.BadRequestError, "invalid base64 image",
       lambda: client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
           {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@@"}}]}]))
raises(openai.BadRequestError, "bad role order",
       lambda: client.chat.completions.create(model=MODEL, messages=[{"role": "assistant", "content": "x"}]))
raises(openai.AuthenticationError, "wrong API key",
       lambda: openai.OpenAI(base_url=GW + "/v1", api_key="nope", max_retries=0).models.list())
raises(openai.APIStatusError, "body over the limit (413)",
       lambda: client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x" * (70 << 20)}]))
sys.exit(1 if fails else 0)
