/* tests/test_proto.c - the wire protocol: round trips of every message, strict rejection of
 * malformed, truncated, oversized and wrong-version input, and the ZeroMQ framing. */
#include "core/error.h"
#include "proto/proto.h"
#include "proto/transport.h"
#include "test_util.h"

#include <stdint.h>

static int dec_raw(int cmd, const void *body, size_t len);

static int roundtrip(const am_msg *in, const am_bytes *pay, int n_pay, am_msg *out) {
    am_buf b = {0};
    uint8_t hdr[AM_PROTO_HEADER_BYTES];
    int rc = am_msg_encode(in, &b);
    if (!rc) {
        am_proto_header(in->cmd, hdr);
        rc = am_msg_decode(hdr, sizeof hdr, b.data, b.len, pay, (size_t)n_pay, out);
    }
    am_buf_fini(&b);
    return rc;
}

static void test_ready_heartbeat(void) {
    am_msg m, o;
    am_msg_init(&m, AM_CMD_READY);
    m.role = AM_ROLE_ENCODER;
    m.name = "enc-1";
    m.model = "tiny";
    m.fingerprint = "abcdef0123";
    m.capacity = 8;
    m.out_dim = 64;
    m.modalities[0] = AM_MOD_AUDIO;
    m.modalities[1] = AM_MOD_IMU;
    m.n_modalities = 2;
    CHECK_OK(roundtrip(&m, NULL, 0, &o));
    CHECK_EQ_INT(o.cmd, AM_CMD_READY);
    CHECK_EQ_INT(o.role, AM_ROLE_ENCODER);
    CHECK(!strcmp(o.name, "enc-1") && !strcmp(o.model, "tiny") &&
          !strcmp(o.fingerprint, "abcdef0123"));
    CHECK_EQ_INT(o.capacity, 8);
    CHECK_EQ_INT(o.out_dim, 64);
    CHECK_EQ_INT(o.n_modalities, 2);
    CHECK_EQ_INT(o.modalities[1], AM_MOD_IMU);
    CHECK_EQ_INT(o.tp_size, 1);
    am_msg_fini(&o);

    m.role = AM_ROLE_SHARD;
    m.n_modalities = 0;
    m.tp_size = 2;
    CHECK_OK(roundtrip(&m, NULL, 0, &o));
    CHECK_EQ_INT(o.tp_size, 2);
    am_msg_fini(&o);

    am_msg_init(&m, AM_CMD_HEARTBEAT);
    m.load = 3;
    CHECK_OK(roundtrip(&m, NULL, 0, &o));
    CHECK_EQ_INT(o.load, 3);
    am_msg_fini(&o);
    am_msg_init(&m, AM_CMD_DISCONNECT);
    CHECK_OK(roundtrip(&m, NULL, 0, &o));
    am_msg_fini(&o);
}

static void test_generate(void) {
    am_msg m, o;
    int32_t ids[3] = {1, 500, 7};
    am_msg_seg segs[3] = {
        {.kind = AM_SEG_IDS, .ids = ids, .n_ids = 3, .payload = UINT32_MAX},
        {.kind = AM_SEG_MEDIA, .modality = AM_MOD_IMAGE, .payload = 0},
        {.kind = AM_SEG_TEXT, .text = "what is this?", .text_len = 13, .payload = UINT32_MAX},
    };
    am_msg_init(&m, AM_CMD_GENERATE);
    m.id = 42;
    m.segs = segs;
    m.n_segs = 3;
    m.max_tokens = 16;
    m.temperature = 0.5f;
    m.top_k = 40;
    m.seed = 1234567890123ull;
    m.stop[0] = "</s>";
    m.n_stop = 1;
    m.deadline_ms = 5000;
    m.add_bos = 0;
    am_bytes pay = {"\xff\xd8jpeg", 6};
    CHECK_OK(roundtrip(&m, &pay, 1, &o));
    CHECK_EQ_INT(o.id, 42);
    CHECK_EQ_INT(o.n_segs, 3);
    CHECK_EQ_INT(o.segs[0].n_ids, 3);
    CHECK_EQ_INT(o.segs[0].ids[1], 500);
    CHECK_EQ_INT(o.segs[1].kind, AM_SEG_MEDIA);
    CHECK_EQ_INT(o.segs[1].payload, 0);
    CHECK(!strcmp(o.segs[2].text, "what is this?"));
    CHECK_NEAR(o.temperature, 0.5, 1e-7);
    CHECK_EQ_INT(o.top_k, 40);
    CHECK(o.seed == 1234567890123ull);
    CHECK(!strcmp(o.stop[0], "</s>"));
    CHECK_EQ_INT(o.add_bos, 0);
    CHECK_EQ_INT(o.payloads[0].len, 6);
    am_msg_fini(&o);
    /* Payload count must match the media segments. */
    CHECK_EQ_INT(roundtrip(&m, NULL, 0, &o), AM_EFORMAT);
    am_bytes two[2] = {pay, pay};
    CHECK_EQ_INT(roundtrip(&m, two, 2, &o), AM_EFORMAT);
    /* Slot form (coordinator -> leader): part instead of payload. */
    segs[1].payload = UINT32_MAX;
    segs[1].part = 1;
    segs[1].n_rows = 8;
    CHECK_OK(roundtrip(&m, NULL, 0, &o));
    CHECK_EQ_INT(o.segs[1].part, 1);
    CHECK_EQ_INT(o.segs[1].n_rows, 8);
    CHECK_EQ_INT(o.segs[1].payload, UINT32_MAX);
    am_msg_fini(&o);
    /* Encoder-side limits. */
    m.max_tokens = 0;
    CHECK_EQ_INT(roundtrip(&m, NULL, 0, &o), AM_ERANGE);
}

static void test_encode_embed_token_error(void) {
    am_msg m, o;
    am_msg_init(&m, AM_CMD_ENCODE);
    m.id = 7, m.part = 2, m.attempt = 1, m.modality = AM_MOD_VIDEO, m.frames = 4;
    am_bytes pay = {"data", 4};
    CHECK_OK(roundtrip(&m, &pay, 1, &o));
    CHECK_EQ_INT(o.part, 2);
    CHECK_EQ_INT(o.frames, 4);
    CHECK_EQ_INT(o.modality, AM_MOD_VIDEO);
    am_msg_fini(&o);
    am_bytes empty = {"", 0};
    CHECK_EQ_INT(roundtrip(&m, &empty, 1, &o), AM_EFORMAT);

    float rows[6] = {1, 2, 3, 4, 5, 6};
    am_msg_init(&m, AM_CMD_EMBED);
    m.id = 7, m.part = 2, m.n_rows = 2, m.dim = 3, m.modality = AM_MOD_IMU;
    am_bytes rp = {rows, sizeof rows};
    CHECK_OK(roundtrip(&m, &rp, 1, &o));
    CHECK_EQ_INT(o.n_rows, 2);
    am_msg_fini(&o);
    rp.len -= 4;
    CHECK_EQ_INT(roundtrip(&m, &rp, 1, &o), AM_EFORMAT);

    int32_t ids[2] = {5, 6};
    am_msg_init(&m, AM_CMD_TOKEN);
    m.id = 9, m.ids = ids, m.n_ids = 2, m.text = "ab", m.text_len = 2, m.finish = AM_FIN_EOS;
    m.prompt_tokens = 10, m.completion_tokens = 2;
    CHECK_OK(roundtrip(&m, NULL, 0, &o));
    CHECK_EQ_INT(o.finish, AM_FIN_EOS);
    CHECK_EQ_INT(o.n_ids, 2);
    CHECK_EQ_INT(o.completion_tokens, 2);
    CHECK(!strcmp(o.text, "ab"));
    am_msg_fini(&o);

    am_msg_init(&m, AM_CMD_ERROR);
    m.id = 9, m.code = AM_WERR_OVERLOADED, m.message = "too many requests";
    CHECK_OK(roundtrip(&m, NULL, 0, &o));
    CHECK_EQ_INT(o.code, 429);
    CHECK(!strcmp(o.message, "too many requests"));
    am_msg_fini(&o);
    am_msg_init(&m, AM_CMD_CANCEL);
    m.id = 9;
    CHECK_OK(roundtrip(&m, NULL, 0, &o));
    am_msg_fini(&o);
    m.id = 0; /* required and >= 1 */
    CHECK(roundtrip(&m, NULL, 0, &o) != 0);

    /* HEALTH: the query (id, model) and the answer (fields left out = false / 0). */
    am_msg_init(&m, AM_CMD_HEALTH);
    m.id = 11, m.model = "tiny";
    CHECK_OK(roundtrip(&m, NULL, 0, &o));
    CHECK(!strcmp(o.model, "tiny") && !o.healthy && !o.n_shards);
    am_msg_fini(&o);
    am_msg_init(&m, AM_CMD_HEALTH);
    m.id = 11, m.healthy = 1, m.n_shards = 2, m.n_encoders = 3, m.n_active = 40;
    CHECK_OK(roundtrip(&m, NULL, 0, &o));
    CHECK(o.healthy && o.n_shards == 2 && o.n_encoders == 3 && o.n_active == 40);
    am_msg_fini(&o);
    CHECK_EQ_INT(dec_raw(AM_CMD_HEALTH, "\x82\xa2id\x05\xa7healthy\x01", 12),
                 AM_EFORMAT); /* not a bool */
    CHECK_OK(dec_raw(AM_CMD_GENERATE,
                     "\x84\xa2id\x05\xa8segments\x91\x82\xa1t\xa3ids\xa3ids\xc4\x00"
                     "\xaamax_tokens\x02\xaaignore_eos\xc3",
                     52));
}

static int dec_raw(int cmd, const void *body, size_t len) {
    uint8_t hdr[AM_PROTO_HEADER_BYTES];
    am_msg o;
    am_proto_header(cmd, hdr);
    int rc = am_msg_decode(hdr, sizeof hdr, body, len, NULL, 0, &o);
    am_msg_fini(&o);
    return rc;
}

static void test_hostile(void) {
    am_msg o;
    uint8_t hdr[AM_PROTO_HEADER_BYTES];
    am_proto_header(AM_CMD_CANCEL, hdr);
    const char cancel[] = "\x81\xa2id\x05"; /* {"id": 5} */
    CHECK_OK(am_msg_decode(hdr, sizeof hdr, cancel, 5, NULL, 0, &o));
    am_msg_fini(&o);
    /* Header: short, wrong id, wrong version, unknown command. */
    CHECK_EQ_INT(am_msg_decode(hdr, 4, cancel, 5, NULL, 0, &o), AM_EFORMAT);
    uint8_t h2[5];
    memcpy(h2, hdr, 5), h2[0] = 'X';
    CHECK_EQ_INT(am_msg_decode(h2, 5, cancel, 5, NULL, 0, &o), AM_EFORMAT);
    memcpy(h2, hdr, 5), h2[3] = 2;
    CHECK_EQ_INT(am_msg_decode(h2, 5, cancel, 5, NULL, 0, &o), AM_EUNSUPPORTED);
    CHECK(strstr(am_err_msg(), "version 2") != NULL);
    memcpy(h2, hdr, 5), h2[4] = 0x77;
    CHECK_EQ_INT(am_msg_decode(h2, 5, cancel, 5, NULL, 0, &o), AM_EFORMAT);
    /* Body: truncated, trailing bytes, not a map, wrong type, duplicate, missing. */
    for (size_t n = 0; n < 5; n++)
        CHECK(dec_raw(AM_CMD_CANCEL, cancel, n) != 0);
    CHECK_EQ_INT(dec_raw(AM_CMD_CANCEL, "\x81\xa2id\x05\x00", 6), AM_EFORMAT);
    CHECK_EQ_INT(dec_raw(AM_CMD_CANCEL, "\x91\x05", 2), AM_EFORMAT);
    CHECK_EQ_INT(dec_raw(AM_CMD_CANCEL, "\x81\xa2id\xa1x", 6), AM_EFORMAT);
    CHECK(strstr(am_err_msg(), "'id'") != NULL);
    CHECK_EQ_INT(dec_raw(AM_CMD_CANCEL, "\x82\xa2id\x05\xa2id\x06", 9), AM_EFORMAT);
    CHECK(strstr(am_err_msg(), "twice") != NULL);
    CHECK_EQ_INT(dec_raw(AM_CMD_CANCEL, "\x80", 1), AM_EFORMAT);
    CHECK(strstr(am_err_msg(), "missing") != NULL);
    CHECK_EQ_INT(dec_raw(AM_CMD_CANCEL, "\x81\xa2id\xff", 5), AM_ERANGE); /* -1 */
    /* Unknown fields are skipped. */
    CHECK_OK(dec_raw(AM_CMD_CANCEL, "\x82\xa2id\x05\xa3zzz\xc0", 10));
    /* An array claiming 2^32-1 elements in 6 bytes; a map of 65535 pairs; ext; depth. */
    CHECK_EQ_INT(dec_raw(AM_CMD_CANCEL, "\xdd\xff\xff\xff\xff\x00", 6), AM_EFORMAT);
    CHECK_EQ_INT(dec_raw(AM_CMD_CANCEL, "\xde\xff\xff\x00\x00", 5), AM_EFORMAT);
    CHECK_EQ_INT(dec_raw(AM_CMD_CANCEL, "\xd4\x01\x00", 3), AM_EFORMAT);
    CHECK_EQ_INT(dec_raw(AM_CMD_CANCEL, "\xc1", 1), AM_EFORMAT);
    uint8_t deep[64];
    for (int i = 0; i < 63; i++)
        deep[i] = 0x91;
    deep[63] = 0;
    CHECK_EQ_INT(dec_raw(AM_CMD_CANCEL, deep, sizeof deep), AM_EFORMAT);
    /* A string length past the end. */
    CHECK_EQ_INT(dec_raw(AM_CMD_CANCEL, "\x81\xdb\xff\xff\xff\xf0id", 8), AM_EFORMAT);
    /* Oversized body. */
    static char big[AM_PROTO_MAX_BODY_BYTES + 1];
    CHECK_EQ_INT(dec_raw(AM_CMD_CANCEL, big, sizeof big), AM_ERANGE);
    /* Deterministic mutations of valid messages never crash and never leak. */
    am_msg m;
    int32_t ids[2] = {1, 2};
    am_msg_seg segs[2] = {{.kind = AM_SEG_IDS, .ids = ids, .n_ids = 2, .payload = UINT32_MAX},
                          {.kind = AM_SEG_MEDIA, .modality = AM_MOD_AUDIO, .payload = 0}};
    am_msg_init(&m, AM_CMD_GENERATE);
    m.id = 3, m.segs = segs, m.n_segs = 2, m.max_tokens = 4, m.stop[0] = "x", m.n_stop = 1;
    am_buf b = {0};
    CHECK_OK(am_msg_encode(&m, &b));
    am_bytes pay = {"abc", 3};
    uint64_t s = 88172645463325252ull;
    int accepted = 0;
    for (int it = 0; it < 20000; it++) {
        char mut[512];
        size_t n = b.len < sizeof mut ? b.len : sizeof mut;
        memcpy(mut, b.data, n);
        for (int k = 0; k < 1 + it % 4; k++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            mut[s % n] = (char)(s >> 32);
        }
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        size_t len = it % 3 ? n : s % (n + 1);
        am_proto_header(AM_CMD_GENERATE, hdr);
        if (!am_msg_decode(hdr, sizeof hdr, mut, len, &pay, 1, &o)) accepted++;
        am_msg_fini(&o);
    }
    printf("mutations accepted: %d of 20000\n", accepted);
    am_buf_fini(&b);
}

static void test_transport(void) {
    void *ctx = zmq_ctx_new();
    void *r = zmq_socket(ctx, ZMQ_ROUTER), *d = zmq_socket(ctx, ZMQ_DEALER);
    CHECK_OK(am_wire_setup(r, 1, 0, 1 << 20));
    CHECK_OK(am_wire_setup(d, 0, 0, 1 << 20));
    CHECK(zmq_bind(r, "inproc://t") == 0);
    CHECK(zmq_connect(d, "inproc://t") == 0);
    am_msg m, o;
    am_msg_init(&m, AM_CMD_ENCODE);
    m.id = 1, m.modality = AM_MOD_IMAGE;
    am_bytes pay = {"pixels", 6};
    CHECK_OK(am_wire_send_bufs(d, NULL, 0, &m, &pay, 1, 0));
    am_wire_in in;
    zmq_pollitem_t pi = {r, 0, ZMQ_POLLIN, 0};
    zmq_poll(&pi, 1, 1000);
    CHECK_OK(am_wire_recv(r, 1, &in));
    CHECK_OK(am_wire_decode(&in, &o));
    CHECK_EQ_INT(o.cmd, AM_CMD_ENCODE);
    CHECK(o.payloads[0].len == 6 && !memcmp(o.payloads[0].data, "pixels", 6));
    /* Forward the payload frame back without copying it. */
    zmq_msg_t fwd;
    zmq_msg_init(&fwd);
    zmq_msg_move(&fwd, &in.frames[2]);
    am_msg_fini(&o);
    CHECK_OK(am_wire_send(r, zmq_msg_data(&in.routing), zmq_msg_size(&in.routing), &m, &fwd, 1,
                          ZMQ_DONTWAIT));
    am_wire_in_close(&in);
    zmq_poll(&(zmq_pollitem_t){d, 0, ZMQ_POLLIN, 0}, 1, 1000);
    CHECK_OK(am_wire_recv(d, 0, &in));
    CHECK_OK(am_wire_decode(&in, &o));
    CHECK_EQ_INT(o.payloads[0].len, 6);
    am_msg_fini(&o);
    am_wire_in_close(&in);
    /* Too many frames: drained whole, rejected. */
    am_bytes frames[AM_PROTO_MAX_FRAMES + 5];
    for (int i = 0; i < AM_PROTO_MAX_FRAMES + 5; i++)
        frames[i] = (am_bytes){"x", 1};
    CHECK_OK(am_wire_send_raw(d, frames, AM_PROTO_MAX_FRAMES + 5, 0));
    CHECK_OK(am_wire_send_bufs(d, NULL, 0, &m, &pay, 1, 0));
    zmq_poll(&pi, 1, 1000);
    CHECK_OK(am_wire_recv(r, 1, &in));
    CHECK_EQ_INT(in.n_dropped, 5);
    CHECK_EQ_INT(am_wire_decode(&in, &o), AM_ERANGE);
    am_wire_in_close(&in);
    CHECK_OK(am_wire_recv(r, 1, &in)); /* the next message is intact */
    CHECK_OK(am_wire_decode(&in, &o));
    am_msg_fini(&o);
    am_wire_in_close(&in);
    /* ROUTER_MANDATORY: an unknown peer is reported, not dropped silently. */
    CHECK_EQ_INT(am_wire_send_bufs(r, "nobody", 6, &m, &pay, 1, ZMQ_DONTWAIT), AM_EUNREACH);
    /* Over ZMQ_MAXMSGSIZE: the peer is disconnected by libzmq. */
    zmq_close(r);
    zmq_close(d);
    zmq_ctx_term(ctx);
}

/* One mapping from internal errors to wire codes, for every worker: the
 * request's content 400, a limit 413, a missing thing 404, the rest (unknown
 * codes included) 500. */
static void test_wire_code(void) {
    const struct {
        int rc;
        am_wire_err want;
    } cases[] = {
        {AM_EINVAL, 400},    {AM_EFORMAT, 400},   {AM_ESHAPE, 400}, {AM_EUNSUPPORTED, 400},
        {AM_ERANGE, 413},    {AM_ENOTFOUND, 404}, {AM_ENOMEM, 500}, {AM_EIO, 500},
        {AM_EINTERNAL, 500}, {AM_EAGAIN, 500},    {-1, 500},        {-99999, 500},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK_EQ_INT(am_wire_code(cases[i].rc), cases[i].want);
}

AM_TEST_MAIN(AM_TEST(test_wire_code), AM_TEST(test_ready_heartbeat), AM_TEST(test_generate),
             AM_TEST(test_encode_embed_token_error), AM_TEST(test_hostile), AM_TEST(test_transport))
