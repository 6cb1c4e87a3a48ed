/* api/text.c - UTF-8 scanning and Python's str.strip() for the chat template.
 *
 * The template must strip a message the way Meta's generation.py does (Python's
 * str.strip: every Unicode whitespace code point, not only ASCII), or a text-only
 * dialog would tokenize differently from am_chat_encode. This library links no
 * tokenizer, so it carries its own small UTF-8 reader.
 */
#include "api/api_internal.h"

int am__api_utf8_len(const unsigned char *s, size_t n, uint32_t *cp) {
    if (!n) return 0;
    const unsigned char c = s[0];
    int len;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if ((size_t)len > n) return 0;
    for (int k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[k] & 0x3F);
    }
    /* Overlong forms, surrogates and code points past U+10FFFF are malformed. */
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return len;
}

/* Python's str.isspace(): Unicode White_Space plus U+001C..U+001F. */
static int is_py_space(uint32_t c) {
    if (c <= 0x20) return (c >= 0x09 && c <= 0x0D) || c >= 0x1C;
    switch (c) {
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000: return 1;
    default: return c >= 0x2000 && c <= 0x200A;
    }
}

void am__api_strip(const char *s, size_t len, size_t *b, size_t *e) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, j = len;
    uint32_t cp;
    for (int n; i < j && (n = am__api_utf8_len(u + i, j - i, &cp)) && is_py_space(cp);)
        i += (size_t)n;
    while (j > i) {
        size_t k = j - 1; /* back to the lead byte of the last code point */
        while (k > i && j - k < 4 && (u[k] & 0xC0) == 0x80)
            k--;
        if ((size_t)am__api_utf8_len(u + k, j - k, &cp) != j - k || !is_py_space(cp)) break;
        j = k;
    }
    *b = i;
    *e = j;
}
