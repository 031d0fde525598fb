// SPDX-License-Identifier: MIT
/*
 * The layout dictionary: what the daemon's encoder writes, the library's decoder reads
 * back unchanged, and the decoder refuses what the daemon never sends.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <drm_fourcc.h>
#include <systemd/sd-bus.h>

#include "layout-bus.h"
#include "tap.h"

static sd_bus *bus;

/* An unstarted peer connection is all sd-bus needs to build and seal messages. */
static void bus_setup(void)
{
	int sv[2];

	tap_require(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
	tap_require(sd_bus_new(&bus) >= 0 && sd_bus_set_fd(bus, sv[0], sv[0]) >= 0 &&
			    sd_bus_set_anonymous(bus, 1) >= 0 && sd_bus_start(bus) >= 0,
		    "a peer bus to build messages on");
	close(sv[1]);
}

static sd_bus_message *new_message(void)
{
	sd_bus_message *m = NULL;

	tap_require(sd_bus_message_new_method_call(bus, &m, NULL, "/", "org.dmabroker.Test", "T") >=
			    0,
		    "a message");
	return m;
}

/* Seals m as sending would, and rewinds it for reading. */
static int seal(sd_bus_message *m)
{
	static uint64_t cookie;
	int r = sd_bus_message_seal(m, ++cookie, 0);

	if (r >= 0)
		r = sd_bus_message_rewind(m, 1);
	return r < 0 ? r : 0;
}

static bool layouts_equal(const struct db_layout *a, const struct db_layout *b)
{
	return a->size == b->size && a->width == b->width && a->height == b->height &&
	       a->fourcc == b->fourcc && a->modifier == b->modifier && a->n_planes == b->n_planes &&
	       memcmp(a->offsets, b->offsets, a->n_planes * sizeof(uint32_t)) == 0 &&
	       memcmp(a->strides, b->strides, a->n_planes * sizeof(uint32_t)) == 0;
}

static const struct db_layout_dict zero;

/* Encodes d with a u32 after it (implied NULL: the full form, else the compact form against
 * implied), decodes against the same implied values, and checks the u32 is what comes next. */
static void round_trip_form(const struct db_layout_dict *d, const struct db_layout_dict *implied,
			    const char *form, const char *what)
{
	sd_bus_message *m = new_message();
	struct db_layout_dict got;
	uint32_t tail = 0;

	tap_ok(db_layout_dict_append(m, d, implied) == 0, "%s: encode (%s)", what, form);
	tap_is(sd_bus_message_append(m, "u", 0xc0ffeeu), 1, "a value after the dictionary");
	tap_is(seal(m), 0, "seal");
	tap_is(db_layout_dict_read_over(m, implied, &got), 0, "decode");
	tap_ok(layouts_equal(&d->layout, &got.layout), "%s (%s): the layout comes back", what,
	       form);
	/* The compact form leaves out empty strings: the reader gives NULL for them. */
	tap_ok(strcmp(got.backend ? got.backend : "", d->backend ? d->backend : "") == 0 &&
		       (implied || got.backend),
	       "%s (%s): backend", what, form);
	tap_ok(strcmp(got.name ? got.name : "", d->name ? d->name : "") == 0 &&
		       (implied || got.name),
	       "%s (%s): name", what, form);
	tap_is(got.is_dmabuf, d->is_dmabuf, "dmabuf");
	tap_ok(sd_bus_message_read(m, "u", &tail) > 0 && tail == 0xc0ffeeu,
	       "%s (%s): the decoder stops at the dictionary's end", what, form);
	sd_bus_message_unref(m);
}

/* Every form must read back to the same dictionary. asked: what a spec would say. */
static void round_trip(const struct db_layout_dict *d, const struct db_layout_dict *asked,
		       const char *what)
{
	round_trip_form(d, NULL, "full", what);
	round_trip_form(d, &zero, "compact", what);
	round_trip_form(d, asked, "compact, against a spec", what);
}

/* Entries in a compact encoding of d against implied. */
static unsigned compact_entries(const struct db_layout_dict *d,
				const struct db_layout_dict *implied)
{
	sd_bus_message *m = new_message();
	unsigned n = 0;
	int r;

	tap_is(db_layout_dict_append(m, d, implied), 0, "encode compactly");
	tap_is(seal(m), 0, "seal");
	r = sd_bus_message_enter_container(m, 'a', "{sv}");
	while (r >= 0 && (r = sd_bus_message_skip(m, "{sv}")) > 0)
		n++;
	sd_bus_message_unref(m);
	return n;
}

/* The compact form holds only what differs from the implied values. */
static void test_compact_size(void)
{
	struct db_layout_dict d = {.layout = {.size = 4096}, .backend = "memfd"};
	struct db_layout_dict asked = {.layout = {.size = 4096}};

	tap_is(compact_entries(&d, &zero), 2, "a plain buffer against zeros: size and backend");
	tap_is(compact_entries(&d, &asked), 1, "against its spec: backend only");
	d.name = asked.name = "frame";
	tap_is(compact_entries(&d, &asked), 1, "  the name the spec gave is left out too");
	tap_ok(db_layout_compute(64, 32, DRM_FORMAT_NV12, DRM_FORMAT_MOD_LINEAR, 64, &d.layout) ==
		       0,
	       "an NV12 layout");
	asked.layout = (struct db_layout){
		.width = 64, .height = 32, .fourcc = DRM_FORMAT_NV12, .modifier = 0};
	tap_is(compact_entries(&d, &asked), 5,
	       "an image against its spec: size, planes, offsets, strides, backend");
}

static void test_round_trips(void)
{
	struct db_layout_dict d = {.backend = "udmabuf", .is_dmabuf = true, .name = "frame"};
	struct db_layout_dict asked;

	tap_require(db_layout_compute(640, 360, DRM_FORMAT_YUV420, DRM_FORMAT_MOD_LINEAR, 64,
				      &d.layout) == 0,
		    "a YUV420 layout");
	tap_is(d.layout.n_planes, 3, "three planes");
	asked = (struct db_layout_dict){.layout = {.width = 640,
						   .height = 360,
						   .fourcc = DRM_FORMAT_YUV420,
						   .modifier = DRM_FORMAT_MOD_LINEAR},
					.name = "frame"};
	round_trip(&d, &asked, "YUV420, 3 planes");
	/* A spec that implies planes the buffer does not have: the three go together. */
	asked.layout.n_planes = 1;
	asked.layout.offsets[0] = 5;
	round_trip(&d, &asked, "YUV420 against other planes");

	d = (struct db_layout_dict){.layout = {.size = 1 << 20}, .backend = "memfd"};
	asked = (struct db_layout_dict){.layout = {.size = 1 << 20}};
	round_trip(&d, &asked, "a plain byte buffer");
	/* A contiguous buffer may be bigger than its spec asked. */
	asked.layout.size = 4096;
	round_trip(&d, &asked, "a plain buffer bigger than asked");

	/* Every field at its widest. */
	d = (struct db_layout_dict){.layout = {.size = SIZE_MAX,
					       .width = UINT32_MAX,
					       .height = UINT32_MAX,
					       .fourcc = UINT32_MAX,
					       .modifier = UINT64_MAX,
					       .n_planes = DMABROKER_MAX_PLANES,
					       .offsets = {1, 2, 3, UINT32_MAX},
					       .strides = {UINT32_MAX, 7, 8, 9}},
				    .backend = "dma-heap",
				    .is_dmabuf = true,
				    .name = "max"};
	round_trip(&d, &zero, "maximal values, 4 planes");

	d.layout.n_planes = DMABROKER_MAX_PLANES + 1;
	{
		sd_bus_message *m = new_message();

		tap_is(db_layout_dict_append(m, &d, NULL), -EINVAL, "the encoder refuses 5 planes");
		tap_is(db_layout_dict_append(m, &d, &zero), -EINVAL, "so does the compact one");
		sd_bus_message_unref(m);
	}
}

/* Decodes a hand-built dictionary: append fills m between a{sv}'s brackets. */
static int decode_built(int (*append)(sd_bus_message *m), struct db_layout_dict *ret)
{
	sd_bus_message *m = new_message();
	int r;

	r = sd_bus_message_open_container(m, 'a', "{sv}");
	if (r >= 0)
		r = append(m);
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r >= 0)
		r = seal(m);
	tap_require(r >= 0, "built a dictionary");
	r = db_layout_dict_read(m, ret);
	sd_bus_message_unref(m);
	return r;
}

static int append_au(sd_bus_message *m, const char *key, const uint32_t *v, size_t n)
{
	int r = sd_bus_message_open_container(m, 'e', "sv");

	if (r >= 0)
		r = sd_bus_message_append_basic(m, 's', key);
	if (r >= 0)
		r = sd_bus_message_open_container(m, 'v', "au");
	if (r >= 0)
		r = sd_bus_message_append_array(m, 'u', v, n * sizeof(uint32_t));
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	return r;
}

static const uint32_t two[2] = {0, 4096}, five[5] = {0};

static int unknown_keys(sd_bus_message *m)
{
	int r = sd_bus_message_append(m, "{sv}{sv}{sv}", "future", "a{ss}", 1, "k", "v", "planes",
				      "u", 2u, "width", "u", 64u);

	if (r >= 0)
		r = sd_bus_message_append(m, "{sv}", "later", "(ut)", 1u, (uint64_t)2);
	if (r >= 0)
		r = append_au(m, "offsets", two, 2);
	if (r >= 0)
		r = append_au(m, "strides", two, 2);
	return r;
}

static int width_as_u64(sd_bus_message *m)
{
	return sd_bus_message_append(m, "{sv}", "width", "t", (uint64_t)64);
}

static int backend_as_path(sd_bus_message *m)
{
	return sd_bus_message_append(m, "{sv}", "backend", "o", "/x");
}

static int offsets_as_at(sd_bus_message *m)
{
	return sd_bus_message_append(m, "{sv}{sv}", "planes", "u", 1u, "offsets", "at", 1,
				     (uint64_t)0);
}

static int five_planes(sd_bus_message *m)
{
	int r = sd_bus_message_append(m, "{sv}", "planes", "u", 5u);

	if (r >= 0)
		r = append_au(m, "offsets", five, 5);
	if (r >= 0)
		r = append_au(m, "strides", five, 5);
	return r;
}

static int planes_five_arrays_four(sd_bus_message *m)
{
	int r = sd_bus_message_append(m, "{sv}", "planes", "u", 5u);

	if (r >= 0)
		r = append_au(m, "offsets", five, 4);
	if (r >= 0)
		r = append_au(m, "strides", five, 4);
	return r;
}

static int planes_two_offsets_one(sd_bus_message *m)
{
	int r = sd_bus_message_append(m, "{sv}", "planes", "u", 2u);

	if (r >= 0)
		r = append_au(m, "offsets", two, 1);
	if (r >= 0)
		r = append_au(m, "strides", two, 2);
	return r;
}

static int arrays_without_planes(sd_bus_message *m)
{
	int r = append_au(m, "offsets", two, 2);

	if (r >= 0)
		r = append_au(m, "strides", two, 2);
	return r;
}

static int planes_given_twice(sd_bus_message *m)
{
	int r = sd_bus_message_append(m, "{sv}{sv}", "planes", "u", 2u, "planes", "u", 0u);

	if (r >= 0)
		r = append_au(m, "offsets", two, 2);
	if (r >= 0)
		r = append_au(m, "strides", two, 2);
	return r;
}

static int nothing(sd_bus_message *m)
{
	return 0;
}

static void test_strict_decoding(void)
{
	struct db_layout_dict d = {.layout = {.width = 7}};

	tap_is(decode_built(unknown_keys, &d), 0, "unknown keys of any type are skipped");
	tap_ok(d.layout.n_planes == 2 && d.layout.width == 64 && d.layout.offsets[1] == 4096 &&
		       d.layout.strides[1] == 4096,
	       "... and the known keys around them are read");
	tap_is(decode_built(nothing, &d), 0, "an empty dictionary is a plain buffer");
	tap_ok(d.layout.n_planes == 0 && d.layout.size == 0 && !d.backend && !d.name,
	       "... with nothing set and absent strings NULL");

	tap_is(decode_built(width_as_u64, &d), -EBADMSG, "width as t is refused");
	tap_is(decode_built(backend_as_path, &d), -EBADMSG, "backend as o is refused");
	tap_is(decode_built(offsets_as_at, &d), -EBADMSG, "offsets as at is refused");
	tap_is(decode_built(five_planes, &d), -EBADMSG, "5 planes are refused");
	tap_is(decode_built(planes_five_arrays_four, &d), -EBADMSG,
	       "planes 5 with 4-long arrays is refused");
	tap_is(decode_built(planes_two_offsets_one, &d), -EBADMSG,
	       "planes 2 with one offset is refused");
	tap_is(decode_built(arrays_without_planes, &d), -EBADMSG,
	       "arrays without planes are refused");
	tap_is(decode_built(planes_given_twice, &d), -EBADMSG, "a key given twice is refused");

	d = (struct db_layout_dict){.layout = {.width = 7}};
	decode_built(width_as_u64, &d);
	tap_is(d.layout.width, 7, "a refused dictionary leaves the result untouched");
}

int main(void)
{
	bus_setup();
	test_round_trips();
	test_compact_size();
	test_strict_decoding();
	sd_bus_flush_close_unref(bus);
	return tap_done();
}
