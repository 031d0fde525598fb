// SPDX-License-Identifier: MIT
#include "stream-wire.h"

#include <endian.h>
#include <errno.h>
#include <string.h>

size_t db_wire_record_size(uint16_t type)
{
	switch (type) {
	case DMABROKER_WIRE_HELLO:
		return sizeof(struct dmabroker_wire_hello);
	case DMABROKER_WIRE_FRAME:
		return sizeof(struct dmabroker_wire_frame);
	case DMABROKER_WIRE_RELEASE:
		return sizeof(struct dmabroker_wire_release);
	default:
		return 0;
	}
}

static int refuse(int r, const char *why, const char **ret_reason)
{
	if (ret_reason)
		*ret_reason = why;
	return r;
}

/* The rules on a record in host order; n_fds: the descriptors that came with it. */
static int check(const union db_wire_record *rec, unsigned n_fds, const char **ret_reason)
{
	const struct dmabroker_wire_frame *f = &rec->frame;
	uint32_t flags = 0;

	if (rec->header.version != DMABROKER_WIRE_VERSION)
		return refuse(-EPROTO, "unknown wire version", ret_reason);
	if (db_wire_record_size(rec->header.type) == 0)
		return refuse(-EBADMSG, "unknown record type", ret_reason);
	if (rec->header.size != db_wire_record_size(rec->header.type))
		return refuse(-EBADMSG, "wrong size for the record type", ret_reason);
	switch (rec->header.type) {
	case DMABROKER_WIRE_HELLO:
		if (rec->hello.reserved != 0)
			return refuse(-EBADMSG, "reserved bytes not zero", ret_reason);
		if (rec->hello.flags != 0)
			return refuse(-EBADMSG, "flags not allowed in a hello", ret_reason);
		if (rec->hello.buffer_count == 0)
			return refuse(-EBADMSG, "hello without buffers", ret_reason);
		if (rec->hello.max_held == 0 || rec->hello.max_held > rec->hello.buffer_count)
			return refuse(-EBADMSG, "max_held out of range", ret_reason);
		break;
	case DMABROKER_WIRE_FRAME:
		flags = f->flags;
		if (flags & ~DMABROKER_WIRE_FRAME_FLAGS)
			return refuse(-EBADMSG, "flags not allowed in a frame", ret_reason);
		if (f->meta_size > DMABROKER_WIRE_META_MAX)
			return refuse(-EBADMSG, "meta_size too large", ret_reason);
		for (size_t i = f->meta_size; i < DMABROKER_WIRE_META_MAX; i++)
			if (f->meta[i] != 0)
				return refuse(-EBADMSG, "bytes past meta_size not zero",
					      ret_reason);
		if (f->meta_type > DMABROKER_WIRE_META_OPAQUE)
			return refuse(-EBADMSG, "unknown meta_type", ret_reason);
		if ((f->meta_type == DMABROKER_WIRE_META_NONE && f->meta_size != 0) ||
		    (f->meta_type == DMABROKER_WIRE_META_RECT && f->meta_size != 16))
			return refuse(-EBADMSG, "meta_size wrong for meta_type", ret_reason);
		if (f->index == DMABROKER_WIRE_NO_BUFFER) {
			if (!(flags & DMABROKER_WIRE_END_OF_STREAM))
				return refuse(-EBADMSG,
					      "a frame without a buffer that does not "
					      "end the stream",
					      ret_reason);
			if (flags & DMABROKER_WIRE_FENCE)
				return refuse(-EBADMSG, "a fence on a frame without a buffer",
					      ret_reason);
		}
		break;
	case DMABROKER_WIRE_RELEASE:
		flags = rec->release.flags;
		if (flags & ~DMABROKER_WIRE_RELEASE_FLAGS)
			return refuse(-EBADMSG, "flags not allowed in a release", ret_reason);
		if (rec->release.index == DMABROKER_WIRE_NO_BUFFER)
			return refuse(-EBADMSG, "a release without a buffer", ret_reason);
		break;
	}
	if (!(flags & DMABROKER_WIRE_FENCE) && n_fds > 0)
		return refuse(-EBADMSG, "a descriptor where none belongs", ret_reason);
	if ((flags & DMABROKER_WIRE_FENCE) && n_fds == 0)
		return refuse(-EBADMSG, "a fence flag without its descriptor", ret_reason);
	if (n_fds > 1)
		return refuse(-EBADMSG, "more descriptors than the record carries", ret_reason);
	return rec->header.type;
}

/* Little-endian fields: the byte order is the wire's, whatever the host's. */
static uint16_t get16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return le16toh(v);
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

static void put16(uint8_t *p, uint16_t v)
{
	v = htole16(v);
	memcpy(p, &v, sizeof(v));
}

static void put32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, sizeof(v));
}

static void put64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, sizeof(v));
}

#define OFF(type, member) offsetof(struct dmabroker_wire_##type, member)

int db_wire_decode(const void *buf, size_t len, unsigned n_fds, union db_wire_record *ret,
		   const char **ret_reason)
{
	const uint8_t *p = buf;
	union db_wire_record rec;
	size_t want;
	int k;

	if (len < sizeof(struct dmabroker_wire_header))
		return refuse(-EBADMSG, "record shorter than its header", ret_reason);
	memset(&rec, 0, sizeof(rec));
	rec.header.version = get16(p + OFF(header, version));
	rec.header.type = get16(p + OFF(header, type));
	rec.header.size = get32(p + OFF(header, size));
	if (rec.header.version != DMABROKER_WIRE_VERSION)
		return refuse(-EPROTO, "unknown wire version", ret_reason);
	want = db_wire_record_size(rec.header.type);
	if (want == 0)
		return refuse(-EBADMSG, "unknown record type", ret_reason);
	/* The header's size and the packet's length both: a record is its packet, whole. */
	if (rec.header.size != want || len != want)
		return refuse(-EBADMSG, "wrong size for the record type", ret_reason);
	switch (rec.header.type) {
	case DMABROKER_WIRE_HELLO:
		rec.hello.buffer_count = get32(p + OFF(hello, buffer_count));
		rec.hello.max_held = get32(p + OFF(hello, max_held));
		rec.hello.flags = get32(p + OFF(hello, flags));
		rec.hello.reserved = get32(p + OFF(hello, reserved));
		break;
	case DMABROKER_WIRE_FRAME:
		rec.frame.index = get32(p + OFF(frame, index));
		rec.frame.flags = get32(p + OFF(frame, flags));
		rec.frame.seq = get64(p + OFF(frame, seq));
		rec.frame.timestamp_ns = get64(p + OFF(frame, timestamp_ns));
		rec.frame.meta_type = get32(p + OFF(frame, meta_type));
		rec.frame.meta_size = get32(p + OFF(frame, meta_size));
		memcpy(rec.frame.meta, p + OFF(frame, meta), DMABROKER_WIRE_META_MAX);
		break;
	case DMABROKER_WIRE_RELEASE:
		rec.release.index = get32(p + OFF(release, index));
		rec.release.flags = get32(p + OFF(release, flags));
		rec.release.seq = get64(p + OFF(release, seq));
		break;
	}
	k = check(&rec, n_fds, ret_reason);
	if (k < 0)
		return k;
	if (ret)
		*ret = rec;
	return rec.header.type;
}

int db_wire_encode(const union db_wire_record *rec, void *out, const char **ret_reason)
{
	union db_wire_record r = *rec;
	uint8_t *p = out;
	uint32_t flags;
	int k;

	r.header.version = DMABROKER_WIRE_VERSION;
	r.header.size = (uint32_t)db_wire_record_size(r.header.type);
	flags = r.header.type == DMABROKER_WIRE_FRAME	  ? r.frame.flags
		: r.header.type == DMABROKER_WIRE_RELEASE ? r.release.flags
							  : 0;
	k = check(&r, (flags & DMABROKER_WIRE_FENCE) ? 1 : 0, ret_reason);
	if (k < 0)
		return k;
	memset(out, 0, r.header.size);
	put16(p + OFF(header, version), r.header.version);
	put16(p + OFF(header, type), r.header.type);
	put32(p + OFF(header, size), r.header.size);
	switch (r.header.type) {
	case DMABROKER_WIRE_HELLO:
		put32(p + OFF(hello, buffer_count), r.hello.buffer_count);
		put32(p + OFF(hello, max_held), r.hello.max_held);
		break;
	case DMABROKER_WIRE_FRAME:
		put32(p + OFF(frame, index), r.frame.index);
		put32(p + OFF(frame, flags), r.frame.flags);
		put64(p + OFF(frame, seq), r.frame.seq);
		put64(p + OFF(frame, timestamp_ns), r.frame.timestamp_ns);
		put32(p + OFF(frame, meta_type), r.frame.meta_type);
		put32(p + OFF(frame, meta_size), r.frame.meta_size);
		memcpy(p + OFF(frame, meta), r.frame.meta, r.frame.meta_size);
		break;
	case DMABROKER_WIRE_RELEASE:
		put32(p + OFF(release, index), r.release.index);
		put32(p + OFF(release, flags), r.release.flags);
		put64(p + OFF(release, seq), r.release.seq);
		break;
	}
	return (int)r.header.size;
}
