/* core/text.c - UTF-8, Python's strip and the chat template's text (core/text.h). */
#include "core/text.h"

#include "core/alloc.h"

#include <string.h>

int am_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    /* Same acceptance rules as sentencepiece's string_util::DecodeUTF8. */
    uint32_t c;
    if (n == 0) return 0;
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    if (n >= 2 && (s[0] & 0xE0) == 0xC0) {
        c = ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
        if ((s[1] & 0xC0) == 0x80 && c >= 0x80) {
            *cp = c;
            return 2;
        }
    } else if (n >= 3 && (s[0] & 0xF0) == 0xE0) {
        c = ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        if ((s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80 && c >= 0x800 &&
            (c < 0xD800 || c >= 0xE000)) {
            *cp = c;
            return 3;
        }
    } else if (n >= 4 && (s[0] & 0xF8) == 0xF0) {
        c = ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
            ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
        if ((s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80 && (s[3] & 0xC0) == 0x80 &&
            c >= 0x10000 && c <= 0x10FFFF) {
            *cp = c;
            return 4;
        }
    }
    return 0;
}

int am_py_isspace(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

void am_py_strip(const char *s, size_t len, size_t *b, size_t *e) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, j = len;
    uint32_t cp;
    for (int n; i < j && (n = am_utf8_decode(u + i, j - i, &cp)) && am_py_isspace(cp);)
        i += (size_t)n;
    while (j > i) {
        size_t k = j - 1; /* back to the lead byte of the last code point (at most 4) */
        while (k > i && j - k < 4 && (u[k] & 0xC0) == 0x80)
            k--;
        if ((size_t)am_utf8_decode(u + k, j - k, &cp) != j - k || !am_py_isspace(cp)) break;
        j = k;
    }
    *b = i;
    *e = j;
}

int am_chat_has_tag(const char *s) {
    static const char *const tags[] = {AM_CHAT_B_INST, AM_CHAT_E_INST, "<<SYS>>", "<</SYS>>"};
    for (size_t k = 0; k < sizeof tags / sizeof tags[0]; k++)
        if (strstr(s, tags[k])) return 1;
    return 0;
}

void am_strbuf_put(am_strbuf *b, const char *s, size_t n) {
    if (b->oom || !n) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *d = am_realloc(b->d, cap);
        if (!d) {
            b->oom = 1;
            return;
        }
        b->d = d, b->cap = cap;
    }
    memcpy(b->d + b->n, s, n);
    b->n += n;
    b->d[b->n] = '\0';
}

void am_strbuf_puts(am_strbuf *b, const char *s) { am_strbuf_put(b, s, strlen(s)); }
