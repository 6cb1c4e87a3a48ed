/* tests/fuzz_proto.c - libFuzzer target for the message decoder (proto/proto.c).
 *
 * Input layout: byte 0 = command, byte 1 = number of payload frames (mod 4),
 * then the body; payload frames are cut from the end of the input (8 bytes
 * each, when there are enough). Every input must decode or be rejected with
 * an error, without a crash, a leak or undefined behaviour.
 * Build: clang -fsanitize=fuzzer,address,undefined (tests/proto.cmake does it
 * when the compiler is clang; deploy/test.sh runs it for a bounded time).
 */
#include "proto/proto.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    uint8_t hdr[AM_PROTO_HEADER_BYTES];
    am_proto_header(data[0] % (AM_CMD_MAX + 2), hdr);
    size_t n_pay = data[1] % 4;
    data += 2, size -= 2;
    am_bytes pay[4];
    for (size_t i = 0; i < n_pay; i++) {
        size_t take = size >= 8 ? 8 : size;
        pay[i].data = data + size - take;
        pay[i].len = take;
        size -= take;
    }
    am_msg m;
    if (am_msg_decode(hdr, sizeof hdr, data, size, pay, n_pay, &m) == 0) {
        /* What decodes must encode again. */
        am_buf b = {0};
        (void)am_msg_encode(&m, &b);
        am_buf_fini(&b);
    }
    am_msg_fini(&m);
    return 0;
}
