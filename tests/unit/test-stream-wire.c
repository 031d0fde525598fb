// SPDX-License-Identifier: MIT
/*
 * The link's codec: each rule of include/dmabroker-wire.h has a record that breaks exactly it
 * (a valid record with one change) and is refused with its reason; valid records round-trip.
 */
#include <endian.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "../common/tap.h"
#include "stream-wire.h"

static union db_wire_record hello(void)
{
	union db_wire_record r = {.hello = {.header = {.type = DMABROKER_WIRE_HELLO},
					    .buffer_count = 4,
					    .max_held = 2}};
	return r;
}

static union db_wire_record frame(void)
{
	union db_wire_record r = {.frame = {.header = {.type = DMABROKER_WIRE_FRAME},
					    .index = 3,
					    .flags = DMABROKER_WIRE_DISCONTINUITY,
					    .seq = 0x0102030405060708ull,
					    .timestamp_ns = 123456789,
					    .meta_type = DMABROKER_WIRE_META_RECT,
					    .meta_size = 16}};
	for (unsigned i = 0; i < 16; i++)
		r.frame.meta[i] = (uint8_t)(i + 1);
	return r;
}

static union db_wire_record release(void)
{
	union db_wire_record r = {
		.release = {.header = {.type = DMABROKER_WIRE_RELEASE}, .index = 1, .seq = 42}};
	return r;
}

/* Encodes a valid record into buf; its length. */
static size_t enc(const union db_wire_record *r, uint8_t *buf)
{
	const char *why = NULL;
	int n = db_wire_encode(r, buf, &why);

	tap_require(n > 0, "a valid record encodes (%s)", why ? why : "");
	return (size_t)n;
}

static void put32(uint8_t *buf, size_t off, uint32_t v)
{
	v = htole32(v);
	memcpy(buf + off, &v, sizeof(v));
}

static void put16(uint8_t *buf, size_t off, uint16_t v)
{
	v = htole16(v);
	memcpy(buf + off, &v, sizeof(v));
}

/* buf (len bytes, n_fds descriptors) is refused with r and a reason containing want. */
static void refused(const uint8_t *buf, size_t len, unsigned n_fds, int want_r, const char *want,
		    const char *what)
{
	union db_wire_record out;
	const char *why = NULL;
	int r = db_wire_decode(buf, len, n_fds, &out, &why);

	if (!tap_ok(r == want_r && why && strstr(why, want), "refused: %s", what))
		tap_diag("  got %d (%s), want %d (%s)", r, why ? why : "no reason", want_r, want);
}

static void test_round_trip(void)
{
	union db_wire_record in[3] = {hello(), frame(), release()}, out;
	uint8_t buf[DMABROKER_WIRE_RECORD_MAX];
	const char *names[3] = {"hello", "frame", "release"};

	in[2].release.flags = DMABROKER_WIRE_FENCE;
	for (unsigned i = 0; i < 3; i++) {
		size_t n = enc(&in[i], buf);
		unsigned fds = i == 2 ? 1 : 0;
		int r = db_wire_decode(buf, n, fds, &out, NULL);

		tap_is(r, in[i].header.type, names[i]);
		tap_is(n, db_wire_record_size(in[i].header.type), "its size");
		in[i].header.version = DMABROKER_WIRE_VERSION;
		in[i].header.size = (uint32_t)n;
		tap_ok(memcmp(&in[i], &out, n) == 0, "%s round-trips", names[i]);
	}
	/* The wire is little-endian whatever the host. */
	{
		union db_wire_record f = frame();
		size_t n = enc(&f, buf);

		tap_ok(n == 104 && buf[0] == 1 && buf[1] == 0 && buf[2] == 2 && buf[4] == 104 &&
			       buf[16] == 0x08 && buf[23] == 0x01,
		       "fields are little-endian at their offsets");
	}
	/* An end-of-stream frame without a buffer. */
	{
		union db_wire_record f = frame();

		f.frame.index = DMABROKER_WIRE_NO_BUFFER;
		f.frame.flags = DMABROKER_WIRE_END_OF_STREAM;
		tap_is(db_wire_decode(buf, enc(&f, buf), 0, &out, NULL), DMABROKER_WIRE_FRAME,
		       "end of stream without a buffer is valid");
	}
	/* OPAQUE metadata of the full size, and no metadata. */
	{
		union db_wire_record f = frame();

		f.frame.meta_type = DMABROKER_WIRE_META_OPAQUE;
		f.frame.meta_size = DMABROKER_WIRE_META_MAX;
		memset(f.frame.meta, 0xaa, sizeof(f.frame.meta));
		tap_is(db_wire_decode(buf, enc(&f, buf), 0, &out, NULL), DMABROKER_WIRE_FRAME,
		       "64 bytes of opaque metadata are valid");
		f.frame.meta_type = DMABROKER_WIRE_META_NONE;
		f.frame.meta_size = 0;
		memset(f.frame.meta, 0, sizeof(f.frame.meta));
		tap_is(db_wire_decode(buf, enc(&f, buf), 0, &out, NULL), DMABROKER_WIRE_FRAME,
		       "a frame without metadata is valid");
	}
	/* A frame with a fence and its descriptor. */
	{
		union db_wire_record f = frame();

		f.frame.flags |= DMABROKER_WIRE_FENCE;
		tap_is(db_wire_decode(buf, enc(&f, buf), 1, &out, NULL), DMABROKER_WIRE_FRAME,
		       "a fenced frame with one descriptor is valid");
	}
}

static void test_header_rules(void)
{
	union db_wire_record h = hello(), f = frame();
	uint8_t buf[DMABROKER_WIRE_RECORD_MAX + 8] = {0};
	size_t n;

	n = enc(&h, buf);
	refused(buf, 7, 0, -EBADMSG, "shorter than its header", "a record shorter than a header");
	put16(buf, 0, 2);
	refused(buf, n, 0, -EPROTO, "version", "version 2");
	put16(buf, 0, 0);
	refused(buf, n, 0, -EPROTO, "version", "version 0");
	n = enc(&h, buf);
	put16(buf, 2, 0);
	refused(buf, n, 0, -EBADMSG, "unknown record type", "type 0");
	put16(buf, 2, 4);
	refused(buf, n, 0, -EBADMSG, "unknown record type", "type 4");
	n = enc(&h, buf);
	put32(buf, 4, 25);
	refused(buf, n, 0, -EBADMSG, "wrong size", "a header size one past the type's");
	n = enc(&h, buf);
	refused(buf, n + 1, 0, -EBADMSG, "wrong size", "a packet one byte longer than its record");
	refused(buf, n - 1, 0, -EBADMSG, "wrong size", "a packet one byte shorter");
	/* A hello's size with a frame's type: the size belongs to the type. */
	n = enc(&h, buf);
	put16(buf, 2, DMABROKER_WIRE_FRAME);
	refused(buf, n, 0, -EBADMSG, "wrong size", "a frame of a hello's size");
	n = enc(&f, buf);
	put16(buf, 2, DMABROKER_WIRE_RELEASE);
	refused(buf, n, 0, -EBADMSG, "wrong size", "a release of a frame's size");
}

static void test_hello_rules(void)
{
	union db_wire_record h = hello();
	uint8_t buf[DMABROKER_WIRE_RECORD_MAX];
	size_t n;

	n = enc(&h, buf);
	put32(buf, offsetof(struct dmabroker_wire_hello, reserved), 1);
	refused(buf, n, 0, -EBADMSG, "reserved", "a hello with a reserved byte set");
	n = enc(&h, buf);
	put32(buf, offsetof(struct dmabroker_wire_hello, flags), 1);
	refused(buf, n, 0, -EBADMSG, "flags not allowed in a hello", "a hello with a flag");
	n = enc(&h, buf);
	put32(buf, offsetof(struct dmabroker_wire_hello, buffer_count), 0);
	put32(buf, offsetof(struct dmabroker_wire_hello, max_held), 0);
	refused(buf, n, 0, -EBADMSG, "without buffers", "a hello with no buffers");
	n = enc(&h, buf);
	put32(buf, offsetof(struct dmabroker_wire_hello, max_held), 0);
	refused(buf, n, 0, -EBADMSG, "max_held", "a hello with max_held 0");
	n = enc(&h, buf);
	put32(buf, offsetof(struct dmabroker_wire_hello, max_held), 5);
	refused(buf, n, 0, -EBADMSG, "max_held", "a hello with max_held over buffer_count");
	n = enc(&h, buf);
	refused(buf, n, 1, -EBADMSG, "a descriptor where none belongs", "a hello with an fd");
}

static void test_frame_rules(void)
{
	union db_wire_record f = frame();
	uint8_t buf[DMABROKER_WIRE_RECORD_MAX];
	const size_t flags = offsetof(struct dmabroker_wire_frame, flags);
	const size_t meta = offsetof(struct dmabroker_wire_frame, meta);
	const size_t meta_size = offsetof(struct dmabroker_wire_frame, meta_size);
	const size_t meta_type = offsetof(struct dmabroker_wire_frame, meta_type);
	size_t n;

	n = enc(&f, buf);
	put32(buf, flags, DMABROKER_WIRE_DISCONTINUITY | (1u << 3));
	refused(buf, n, 0, -EBADMSG, "flags not allowed in a frame", "a frame with flag 1<<3");
	n = enc(&f, buf);
	put32(buf, flags, 1u << 31);
	refused(buf, n, 0, -EBADMSG, "flags not allowed in a frame", "a frame with flag 1<<31");
	n = enc(&f, buf);
	put32(buf, meta_type, DMABROKER_WIRE_META_OPAQUE);
	put32(buf, meta_size, DMABROKER_WIRE_META_MAX + 1);
	refused(buf, n, 0, -EBADMSG, "meta_size too large", "meta_size 65");
	n = enc(&f, buf);
	buf[meta + 16] = 1;
	refused(buf, n, 0, -EBADMSG, "past meta_size", "a byte past meta_size set");
	n = enc(&f, buf);
	buf[meta + DMABROKER_WIRE_META_MAX - 1] = 0x80;
	refused(buf, n, 0, -EBADMSG, "past meta_size", "the last metadata byte set");
	n = enc(&f, buf);
	put32(buf, meta_type, 3);
	refused(buf, n, 0, -EBADMSG, "unknown meta_type", "meta_type 3");
	n = enc(&f, buf);
	put32(buf, meta_size, 12);
	memset(buf + meta + 12, 0, 4);
	refused(buf, n, 0, -EBADMSG, "wrong for meta_type", "a RECT of 12 bytes");
	n = enc(&f, buf);
	put32(buf, meta_type, DMABROKER_WIRE_META_NONE);
	refused(buf, n, 0, -EBADMSG, "wrong for meta_type", "no metadata type with 16 bytes");

	/* Without a buffer: only an end of stream, and never with a fence. */
	f.frame.index = DMABROKER_WIRE_NO_BUFFER;
	f.frame.flags = DMABROKER_WIRE_END_OF_STREAM;
	n = enc(&f, buf);
	put32(buf, flags, DMABROKER_WIRE_END_OF_STREAM | DMABROKER_WIRE_FENCE);
	refused(buf, n, 1, -EBADMSG, "a fence on a frame without a buffer",
		"end of stream without a buffer but with a fence");
	n = enc(&f, buf);
	put32(buf, flags, 0);
	refused(buf, n, 0, -EBADMSG, "does not end the stream", "no buffer and no end of stream");

	/* The descriptor count is the FENCE flag. */
	f = frame();
	n = enc(&f, buf);
	refused(buf, n, 1, -EBADMSG, "a descriptor where none belongs", "a frame with a stray fd");
	f.frame.flags |= DMABROKER_WIRE_FENCE;
	n = enc(&f, buf);
	refused(buf, n, 0, -EBADMSG, "without its descriptor", "a fenced frame without an fd");
	refused(buf, n, 2, -EBADMSG, "more descriptors than the record carries",
		"a fenced frame with two fds");
}

static void test_release_rules(void)
{
	union db_wire_record rel = release();
	uint8_t buf[DMABROKER_WIRE_RECORD_MAX];
	const size_t flags = offsetof(struct dmabroker_wire_release, flags);
	size_t n;

	n = enc(&rel, buf);
	put32(buf, flags, DMABROKER_WIRE_END_OF_STREAM);
	refused(buf, n, 0, -EBADMSG, "flags not allowed in a release",
		"a release with END_OF_STREAM");
	n = enc(&rel, buf);
	put32(buf, flags, DMABROKER_WIRE_DISCONTINUITY);
	refused(buf, n, 0, -EBADMSG, "flags not allowed in a release",
		"a release with DISCONTINUITY");
	n = enc(&rel, buf);
	put32(buf, offsetof(struct dmabroker_wire_release, index), DMABROKER_WIRE_NO_BUFFER);
	refused(buf, n, 0, -EBADMSG, "a release without a buffer", "a release of NO_BUFFER");
	n = enc(&rel, buf);
	refused(buf, n, 1, -EBADMSG, "a descriptor where none belongs",
		"a release with a stray fd");
	put32(buf, flags, DMABROKER_WIRE_FENCE);
	refused(buf, n, 0, -EBADMSG, "without its descriptor", "a fenced release without an fd");
}

/* The encoder refuses what the decoder would: nothing invalid leaves the library. */
static void test_encoder_checks(void)
{
	union db_wire_record f = frame(), h = hello(), rel = release();
	uint8_t buf[DMABROKER_WIRE_RECORD_MAX];
	const char *why = NULL;

	f.frame.meta_size = 65;
	tap_is(db_wire_encode(&f, buf, &why), -EBADMSG, "encoder: meta_size 65");
	h.hello.max_held = 9;
	tap_is(db_wire_encode(&h, buf, &why), -EBADMSG, "encoder: max_held over buffer_count");
	rel.release.flags = DMABROKER_WIRE_END_OF_STREAM;
	tap_is(db_wire_encode(&rel, buf, &why), -EBADMSG,
	       "encoder: a release flag it may not have");
	rel = release();
	rel.header.type = 7;
	tap_is(db_wire_encode(&rel, buf, &why), -EBADMSG, "encoder: an unknown type");
}

int main(void)
{
	test_round_trip();
	test_header_rules();
	test_hello_rules();
	test_frame_rules();
	test_release_rules();
	test_encoder_checks();
	return tap_done();
}
