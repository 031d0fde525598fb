// SPDX-License-Identifier: MIT
#include "fuzz-message.h"

#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <drm_fourcc.h>

#include "layout-bus.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const char *const keys[] = {
	"size",		 "width", "height",	"fourcc",  "modifier", "stride_align",
	"backend",	 "name",  "contiguous", "offsets", "strides",  "single_use",
	"expires_in_ms", "uid",	  "role",	"dynamic", "devices",
};

uint8_t fuzz_take8(struct fuzz_reader *r)
{
	if (!r->left)
		return 0;
	r->left--;
	return *r->p++;
}

uint64_t fuzz_take64(struct fuzz_reader *r)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | fuzz_take8(r);
	return v;
}

static const uint64_t edges[] = {
	0,
	1,
	2,
	3,
	0x7f,
	0xff,
	0xffff,
	0x7fffffffu,
	0x80000000u,
	0xfffffffeu,
	0xffffffffu,
	1ull << 32,
	(1ull << 32) + 1,
	0x7fffffffffffffffull,
	1ull << 63,
	UINT64_MAX - 4095,
	UINT64_MAX - 1,
	UINT64_MAX,
};

static const uint64_t domain[] = {
	DRM_FORMAT_XRGB8888,
	DRM_FORMAT_ARGB8888,
	DRM_FORMAT_NV12,
	DRM_FORMAT_YUYV,
	DRM_FORMAT_YUV420,
	DRM_FORMAT_R8,
	DRM_FORMAT_RGB565,
	DRM_FORMAT_MOD_LINEAR,
	DRM_FORMAT_MOD_INVALID,
	64,
	256,
	4096,
	65536,
	2u << 20,
	1080,
	1920,
	3840,
	4294967291u, /* a prime: lcms overflow */
};

uint64_t fuzz_take_number(struct fuzz_reader *r)
{
	uint8_t b = fuzz_take8(r);

	if (b < 0x40)
		return edges[b % N(edges)];
	if (b < 0x80)
		return domain[b % N(domain)];
	if (b < 0xc0)
		return fuzz_take8(r);
	return fuzz_take64(r);
}

/* What a hostile client puts in text, beyond printable ASCII. */
static const char *const specials[] = {
	"\n",		"\r",
	"\t",		"\x1b[2J",
	"\x7f",		"\xc2\x85", /* NEL */
	"\xc2\x9b", /* CSI */
	"\xe2\x80\xa8", /* line separator */
	"\xe2\x80\xae", /* right-to-left override */
	"\xe2\x81\xa6", /* left-to-right isolate */
	"\xc3\xa9",	"\xf0\x9f\x98\x80",
	"%s",		"%n",
	"\\",		"'",
	"/dev/",	"dma-heap:",
};

void fuzz_take_string(struct fuzz_reader *r, char *out, size_t len)
{
	uint8_t b = fuzz_take8(r);
	/* Short mostly; long ones (to 508 bytes) to pass every bound. */
	size_t want = b & 0x80 ? (size_t)(b & 0x7f) * 4 : b, n = 0;

	while (n < want && r->left) {
		uint8_t c = fuzz_take8(r);
		const char *s;
		size_t l;

		if (c >= 0x20 && c < 0x7f) {
			if (n + 1 >= len)
				break;
			out[n++] = (char)c;
			continue;
		}
		s = specials[c % N(specials)];
		l = strlen(s);
		if (n + l >= len)
			break;
		memcpy(out + n, s, l);
		n += l;
	}
	out[n] = '\0';
}

static sd_bus *fuzz_bus(void)
{
	static sd_bus *bus;
	int sv[2];

	/* An unstarted peer connection is enough to build and parse messages. */
	if (!bus && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0) {
		sd_bus_new(&bus);
		sd_bus_set_fd(bus, sv[0], sv[0]);
		sd_bus_set_anonymous(bus, 1);
		sd_bus_start(bus);
	}
	return bus;
}

int fuzz_message_new(const char *member, sd_bus_message **ret)
{
	return sd_bus_message_new_method_call(fuzz_bus(), ret, "org.dmabroker.Broker1",
					      "/org/dmabroker/Broker1", "org.dmabroker.Broker1",
					      member);
}

int fuzz_message_seal(sd_bus_message *m)
{
	int r = sd_bus_message_seal(m, 1, 0);

	if (r >= 0)
		r = sd_bus_message_rewind(m, 1);
	return r;
}

static const char *const all_types[] = {"s", "b", "u", "t", "au", "at", "as", "y"};

static int append_value(sd_bus_message *m, struct fuzz_reader *r, const char *key, const char *type)
{
	char s[512];

	if (strcmp(type, "s") == 0) {
		fuzz_take_string(r, s, sizeof(s));
		return sd_bus_message_append(m, "{sv}", key, "s", s);
	}
	if (strcmp(type, "b") == 0)
		return sd_bus_message_append(m, "{sv}", key, "b", (int)(fuzz_take8(r) & 1));
	if (strcmp(type, "u") == 0)
		return sd_bus_message_append(m, "{sv}", key, "u", (uint32_t)fuzz_take_number(r));
	if (strcmp(type, "t") == 0)
		return sd_bus_message_append(m, "{sv}", key, "t", fuzz_take_number(r));
	if (strcmp(type, "au") == 0 || strcmp(type, "at") == 0) {
		bool wide = type[1] == 't';
		unsigned n = fuzz_take8(r) % 20;
		uint64_t v64[20];
		uint32_t v32[20];
		int k;

		for (unsigned j = 0; j < n; j++) {
			v64[j] = fuzz_take_number(r);
			v32[j] = (uint32_t)v64[j];
		}
		k = sd_bus_message_open_container(m, 'e', "sv");
		if (k >= 0)
			k = sd_bus_message_append_basic(m, 's', key);
		if (k >= 0)
			k = sd_bus_message_open_container(m, 'v', type);
		if (k >= 0)
			k = sd_bus_message_append_array(
				m, wide ? 't' : 'u', wide ? (void *)v64 : v32, n * (wide ? 8 : 4));
		if (k >= 0)
			k = sd_bus_message_close_container(m);
		if (k >= 0)
			k = sd_bus_message_close_container(m);
		return k;
	}
	if (strcmp(type, "as") == 0) {
		static const char *const pool[] = {"udmabuf",
						   "memfd",
						   "dma-heap",
						   "dma-heap:system",
						   "dma-heap:linux,cma",
						   "/dev/dri/renderD128"};
		unsigned n = fuzz_take8(r) % 20;
		char strs[4][128];
		const char *v[20];
		int k;

		for (unsigned j = 0; j < n; j++) {
			uint8_t b = fuzz_take8(r);

			if (b < 0x80 || j >= 4) {
				v[j] = pool[b % N(pool)];
			} else {
				fuzz_take_string(r, strs[j], sizeof(strs[j]));
				v[j] = strs[j];
			}
		}
		k = sd_bus_message_open_container(m, 'e', "sv");
		if (k >= 0)
			k = sd_bus_message_append_basic(m, 's', key);
		if (k >= 0)
			k = sd_bus_message_open_container(m, 'v', "as");
		if (k >= 0)
			k = sd_bus_message_open_container(m, 'a', "s");
		for (unsigned j = 0; k >= 0 && j < n; j++)
			k = sd_bus_message_append_basic(m, 's', v[j]);
		for (int c = 0; k >= 0 && c < 3; c++)
			k = sd_bus_message_close_container(m);
		return k;
	}
	return sd_bus_message_append(m, "{sv}", key, "y", fuzz_take8(r));
}

int fuzz_append_dict_nested(sd_bus_message *m, struct fuzz_reader *r, const char *const *dkeys,
			    const char *const *types, size_t n_keys, const char *nested_key,
			    const char *const *nested_keys, const char *const *nested_types,
			    size_t n_nested)
{
	unsigned entries = fuzz_take8(r) % 40;
	int k;

	k = sd_bus_message_open_container(m, 'a', "{sv}");
	for (unsigned i = 0; k >= 0 && i < entries && r->left; i++) {
		uint8_t kb = fuzz_take8(r), tb = fuzz_take8(r);
		char made_up[64];
		const char *key = dkeys[kb % n_keys], *type = types[kb % n_keys];

		if (kb == 0xff) {
			fuzz_take_string(r, made_up, sizeof(made_up));
			key = made_up;
		}
		if (tb % 8 == 7) {
			type = all_types[fuzz_take8(r) % N(all_types)];
		} else if (nested_key && strcmp(type, "a{sv}") == 0) {
			k = sd_bus_message_open_container(m, 'e', "sv");
			if (k >= 0)
				k = sd_bus_message_append_basic(m, 's', key);
			if (k >= 0)
				k = sd_bus_message_open_container(m, 'v', "a{sv}");
			if (k >= 0)
				k = fuzz_append_dict(m, r, nested_keys, nested_types, n_nested);
			if (k >= 0)
				k = sd_bus_message_close_container(m);
			if (k >= 0)
				k = sd_bus_message_close_container(m);
			continue;
		}
		k = append_value(m, r, key, type);
	}
	if (k >= 0)
		k = sd_bus_message_close_container(m);
	return k;
}

int fuzz_append_dict(sd_bus_message *m, struct fuzz_reader *r, const char *const *dkeys,
		     const char *const *types, size_t n_keys)
{
	return fuzz_append_dict_nested(m, r, dkeys, types, n_keys, NULL, NULL, NULL, 0);
}

int fuzz_dict_message(const uint8_t *data, size_t size, sd_bus_message **ret)
{
	struct fuzz_reader rd = {data, size};
	sd_bus_message *m = NULL;
	unsigned entries;
	int r;

	r = fuzz_message_new("X", &m);
	if (r < 0)
		return r;
	r = sd_bus_message_open_container(m, 'a', "{sv}");
	entries = fuzz_take8(&rd) % 40;
	for (unsigned i = 0; r >= 0 && i < entries && rd.left; i++) {
		uint8_t k = fuzz_take8(&rd), t = fuzz_take8(&rd);
		char key[32], s[64];

		if (k % 4 == 3)
			fuzz_take_string(&rd, key, sizeof(key));
		else
			snprintf(key, sizeof(key), "%s", keys[k % N(keys)]);
		switch (t % 7) {
		case 0:
			fuzz_take_string(&rd, s, sizeof(s));
			r = sd_bus_message_append(m, "{sv}", key, "s", s);
			break;
		case 1:
			r = sd_bus_message_append(m, "{sv}", key, "b", (int)(fuzz_take8(&rd) & 1));
			break;
		case 2:
			r = sd_bus_message_append(m, "{sv}", key, "u", (uint32_t)fuzz_take64(&rd));
			break;
		case 3:
			r = sd_bus_message_append(m, "{sv}", key, "t", fuzz_take64(&rd));
			break;
		case 4: {
			uint32_t v[8];
			unsigned n = fuzz_take8(&rd) % 8;

			for (unsigned j = 0; j < n; j++)
				v[j] = (uint32_t)fuzz_take64(&rd);
			r = db_dict_append_u32_array(m, key, v, n);
			break;
		}
		case 5:
			fuzz_take_string(&rd, s, sizeof(s));
			r = sd_bus_message_append(m, "{sv}", key, "as", 2, s,
						  "/dev/dri/renderD128");
			break;
		default:
			r = sd_bus_message_append(m, "{sv}", key, "y", fuzz_take8(&rd));
			break;
		}
	}
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r >= 0)
		r = fuzz_message_seal(m);
	if (r < 0) {
		sd_bus_message_unref(m);
		return r;
	}
	*ret = m;
	return 0;
}

const char *const fuzz_constraint_keys[FUZZ_N_CONSTRAINT_KEYS] = {
	"device",	    "min-buffers-for-camping",
	"min-buffers",	    "max-buffers",
	"min-size",	    "max-size",
	"size-divisor",	    "fourccs",
	"modifiers",	    "min-width",
	"max-width",	    "min-height",
	"max-height",	    "width",
	"height",	    "min-strides",
	"max-strides",	    "stride-divisor",
	"offset-divisor",   "contiguous",
	"max-segment-size", "dma-address-bits",
	"device-import",    "backends",
	"cpu-read",	    "cpu-write",
};
const char *const fuzz_constraint_types[FUZZ_N_CONSTRAINT_KEYS] = {
	"s", "u", "u",	"u",  "t", "t", "u", "au", "at", "u", "u",  "u", "u",
	"u", "u", "au", "au", "u", "u", "b", "t",  "u",	 "b", "as", "b", "b",
};
