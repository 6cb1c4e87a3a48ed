/* core/text.h - UTF-8 and the text rules of the LLaMA-2-chat template, shared by the
 * tokenizer's template (llm_shards/tokenizer/chat.c, on token ids) and the OpenAI
 * request parser (api/, which writes the template as text around media and links no
 * tokenizer): one decoder, one Python str.strip(), one set of markers, one growable
 * text buffer.
 *
 * No allocation except am_strbuf's (sticky out-of-memory: the first failed append
 * sets oom and later appends do nothing; the owner frees d with am_free).
 */
#ifndef AM_CORE_TEXT_H
#define AM_CORE_TEXT_H

#include <stddef.h>
#include <stdint.h>

/* sentencepiece's DecodeUTF8 validity test: the length (1..4) of the valid code point
 * at s (n bytes available), or 0 when n is 0 or the first byte starts a malformed
 * sequence (overlong, surrogate, > U+10FFFF, truncated, stray continuation byte).
 * *cp receives the code point when valid. */
int am_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);

/* Python's str.isspace(), all 29 code points: Unicode White_Space plus the
 * information separators U+001C..U+001F that Python also counts. */
int am_py_isspace(uint32_t c);

/* Python's str.strip() on UTF-8 bytes: s[*b .. *e) is s[0 .. len) without whitespace
 * code points at either end (a malformed byte is not whitespace). */
void am_py_strip(const char *s, size_t len, size_t *b, size_t *e);

/* The LLaMA-2-chat markers, as meta-llama generation.py writes them. */
#define AM_CHAT_B_INST "[INST]"
#define AM_CHAT_E_INST "[/INST]"
#define AM_CHAT_B_SYS  "<<SYS>>\n"
#define AM_CHAT_E_SYS  "\n<</SYS>>\n\n"

/* 1 if s (NUL-terminated) holds "[INST]", "[/INST]", "<<SYS>>" or "<</SYS>>", the tags
 * generation.py refuses in a prompt. */
int am_chat_has_tag(const char *s);

/* A growable NUL-terminated text. Zero-initialize; d is NULL until the first non-empty
 * append. */
typedef struct am_strbuf {
    char *d;
    size_t n, cap;
    int oom;
} am_strbuf;
void am_strbuf_put(am_strbuf *b, const char *s, size_t n);
void am_strbuf_puts(am_strbuf *b, const char *s);

#endif
