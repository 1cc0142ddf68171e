/* fuzz_proto.c - libFuzzer target: the frame detector and every decoder must
 * survive arbitrary bytes (no crash, no read past the input, no leak). */
#include "proto/proto.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void decode_all(const uint8_t *b, size_t n)
{
    static struct proto_hello hello;
    static struct proto_hello_ok hello_ok;
    static struct proto_publish pub;
    static struct proto_subscribe sub;
    static struct proto_subscribe_ok sub_ok;
    static struct proto_sub_ack sub_ack;
    static struct proto_consume con;
    static struct proto_ack ack;
    static struct proto_create create;
    static struct proto_info info;
    static struct proto_status status;
    static struct proto_event event;
    static struct proto_delivery delivery;
    static struct proto_sub_end end;
    static struct proto_error error;
    char name[PROTO_NAME_MAX + 1], name2[PROTO_NAME_MAX + 1];
    uint64_t id;
    proto_decode_hello(b, n, &hello);
    proto_decode_hello_ok(b, n, &hello_ok);
    if (proto_decode_publish(b, n, &pub) == 0 && pub.payload_len)
        (void)pub.payload[pub.payload_len - 1]; /* in bounds */
    proto_decode_id(b, n, &id);
    proto_decode_name(b, n, name, sizeof name);
    proto_decode_subscribe(b, n, &sub);
    proto_decode_subscribe_ok(b, n, &sub_ok);
    proto_decode_sub_ack(b, n, &sub_ack);
    proto_decode_consume(b, n, &con);
    proto_decode_ack(b, n, &ack);
    proto_decode_create(b, n, &create);
    proto_decode_durable_delete(b, n, name, name2);
    proto_decode_info_ok(b, n, &info);
    struct proto_reader r;
    uint32_t count;
    if (proto_decode_list_ok(b, n, &r, &count) == 0)
        for (uint32_t i = 0; i < count && proto_decode_info(&r, &info) == 0; i++) {
        }
    proto_decode_status_ok(b, n, &status);
    proto_decode_event(b, n, &event);
    proto_decode_delivery(b, n, &delivery);
    proto_decode_sub_end(b, n, &end);
    proto_decode_error(b, n, &error);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    while (off < size) {
        struct proto_header h;
        size_t flen;
        if (proto_frame_check(data + off, size - off, 1u << 20, &h, &flen) != 0)
            break;
        decode_all(data + off + PROTO_HEADER_SIZE, flen - PROTO_HEADER_SIZE);
        off += flen;
    }
    decode_all(data, size);
    return 0;
}
