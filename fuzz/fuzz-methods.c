// SPDX-License-Identifier: MIT
/*
 * Each method's argument decoding, on messages made from fuzz input, without a bus: the
 * decoders the handlers call (args.c, spec.c, bus-text.c, the token reader; the streams'
 * options with their nested format and constraints too, EndStreamLink's three, TakeStreamLink's two), with the
 * arguments of the right type mostly and of a wrong one now and then. What must hold:
 * whatever a decoder accepts is text that passed the check, and whatever it refuses it says
 * in text (never the client's raw bytes).
 */
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "bus-objects.h"
#include "bus-text.h"
#include "fuzz-message.h"
#include "registry.h"
#include "spec.h"
#include "text.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void require(bool ok)
{
	if (!ok)
		abort();
}

static bool is_text(const char *s, size_t max, unsigned flags)
{
	return s && db_text_check(s, max, flags, NULL) == 0;
}

static const char *const register_keys[] = {"role", "dynamic", "name", "devices",
					    "compact_layouts"};
static const char *const register_types[] = {"s", "b", "s", "as", "b"};
static const char *const spec_keys[] = {"size",	    "width",   "height",      "fourcc",
					"modifier", "backend", "name",	      "contiguous",
					"offsets",  "strides", "stride_align"};
static const char *const spec_types[] = {"t", "u", "u", "u", "t", "s", "s", "b", "au", "au", "u"};
static const char *const share_keys[] = {"single_use", "expires_in_ms", "uid"};
static const char *const share_types[] = {"b", "t", "u"};
static const char *const collection_keys[] = {"name", "participants"};
static const char *const collection_types[] = {"s", "u"};
static const char *const stream_keys[] = {"name", "mode", "max-consumers", "format"};
static const char *const stream_types[] = {"s", "s", "u", "a{sv}"};
static const char *const format_keys[] = {"fourcc", "width", "height", "framerate-num",
					  "framerate-den"};
static const char *const format_types[] = {"u", "u", "u", "u", "u"};
static const char *const join_keys[] = {"required", "label", "constraints"};
static const char *const join_types[] = {"b", "s", "a{sv}"};

enum method {
	M_REGISTER,
	M_ALLOCATE,
	M_EXPORT,
	M_SHARE,
	M_CREATE_COLLECTION,
	M_CONSTRAINTS,
	M_REASON,
	M_PATH,
	M_TOKEN,
	/* After the first ones: the corpus's first byte still picks the method it did. */
	M_CREATE_STREAM,
	M_JOIN_STREAM,
	M_END_STREAM_LINK,
	M_TAKE_STREAM_LINK,
	M_N,
};

/* Whatever the bytes, an object path's syntax: "/" and [A-Za-z0-9_] runs. */
static int append_path(sd_bus_message *m, struct fuzz_reader *rd)
{
	static const char chars[] = "abcdefghijklmnopqrstuvwxyz0123456789_/";
	size_t n = 1 + fuzz_take8(rd) * 2;
	char s[600];

	s[0] = '/';
	for (size_t i = 1; i < n && i < sizeof(s) - 1; i++) {
		s[i] = chars[fuzz_take8(rd) % (sizeof(chars) - 1)];
		if (s[i] == '/' && s[i - 1] == '/')
			s[i] = 'x';
	}
	if (n > 1 && s[n - 1] == '/')
		s[n - 1] = 'x';
	s[n < sizeof(s) ? n : sizeof(s) - 1] = '\0';
	return sd_bus_message_append(m, "o", s);
}

/* The argument as the method takes it, or (wrong) a value of another type. */
static int append_arg(sd_bus_message *m, struct fuzz_reader *rd, enum method which, bool wrong)
{
	char s[600];
	int r;

	if (wrong) {
		switch (fuzz_take8(rd) % 4) {
		case 0:
			return sd_bus_message_append(m, "u", (uint32_t)fuzz_take_number(rd));
		case 1:
			fuzz_take_string(rd, s, sizeof(s));
			return sd_bus_message_append(m, "s", s);
		case 2:
			return sd_bus_message_append(m, "ay", 2, fuzz_take8(rd), fuzz_take8(rd));
		default:
			return 0; /* nothing at all */
		}
	}
	switch (which) {
	case M_REGISTER:
		return fuzz_append_dict(m, rd, register_keys, register_types, N(register_keys));
	case M_ALLOCATE:
	case M_EXPORT:
		return fuzz_append_dict(m, rd, spec_keys, spec_types, N(spec_keys));
	case M_SHARE:
		return fuzz_append_dict(m, rd, share_keys, share_types, N(share_keys));
	case M_CREATE_COLLECTION:
		return fuzz_append_dict(m, rd, collection_keys, collection_types,
					N(collection_keys));
	case M_CONSTRAINTS:
		return fuzz_append_dict(m, rd, fuzz_constraint_keys, fuzz_constraint_types,
					FUZZ_N_CONSTRAINT_KEYS);
	case M_CREATE_STREAM:
		return fuzz_append_dict_nested(m, rd, stream_keys, stream_types, N(stream_keys),
					       "format", format_keys, format_types, N(format_keys));
	case M_JOIN_STREAM:
		return fuzz_append_dict_nested(m, rd, join_keys, join_types, N(join_keys),
					       "constraints", fuzz_constraint_keys,
					       fuzz_constraint_types, FUZZ_N_CONSTRAINT_KEYS);
	case M_REASON:
		fuzz_take_string(rd, s, sizeof(s));
		return sd_bus_message_append(m, "s", s);
	case M_END_STREAM_LINK:
		r = append_path(m, rd);
		if (r >= 0 && fuzz_take8(rd) % 8 != 7)
			r = sd_bus_message_append(m, "u", (uint32_t)fuzz_take_number(rd));
		if (r >= 0) {
			fuzz_take_string(rd, s, sizeof(s));
			r = sd_bus_message_append(m, "s", s);
		}
		return r;
	case M_TAKE_STREAM_LINK:
		r = append_path(m, rd);
		if (r >= 0 && fuzz_take8(rd) % 8 != 7)
			r = sd_bus_message_append(m, "u", (uint32_t)fuzz_take_number(rd));
		return r;
	case M_PATH:
		return append_path(m, rd);
	case M_TOKEN: {
		uint8_t bytes[32];
		size_t n = fuzz_take8(rd) % sizeof(bytes);

		for (size_t i = 0; i < n; i++)
			bytes[i] = fuzz_take8(rd);
		return sd_bus_message_append_array(m, 'y', bytes, n);
	}
	case M_N:
		break;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct db_registry *reg;
	struct fuzz_reader rd = {data, size};
	sd_bus_error error = SD_BUS_ERROR_NULL;
	sd_bus_message *m = NULL;
	enum method which;
	bool wrong;
	int r;

	if (!reg) {
		struct db_limits l;

		db_limits_init_default(&l);
		reg = db_registry_new(&l);
	}
	if (size < 1)
		return 0;
	which = (enum method)(fuzz_take8(&rd) % M_N);
	wrong = fuzz_take8(&rd) % 16 == 15;
	if (fuzz_message_new("X", &m) < 0)
		return 0;
	if (append_arg(m, &rd, which, wrong) < 0 || fuzz_message_seal(m) < 0) {
		sd_bus_message_unref(m);
		return 0;
	}

	switch (which) {
	case M_REGISTER: {
		struct db_register_args a;

		r = db_args_register(m, &a, &error);
		if (r >= 0) {
			require(db_role_is_valid(a.role) && is_text(a.name, DB_TEXT_MAX, 0));
			for (size_t i = 0; a.devices && a.devices[i]; i++)
				require(is_text(a.devices[i], 255, 0) &&
					strncmp(a.devices[i], "/dev/", 5) == 0);
			db_register_args_clear(&a);
		}
		break;
	}
	case M_ALLOCATE: {
		struct db_alloc_plan plan;

		r = db_spec_parse_alloc(m, reg, &plan, &error);
		if (r >= 0) {
			require(plan.size > 0 &&
				plan.size <= db_registry_limits(reg)->max_buffer_size + 4096);
			require(is_text(plan.name, db_registry_limits(reg)->max_name_length,
					DB_TEXT_ASCII));
			require(!plan.backend || is_text(plan.backend, 64, 0));
		}
		break;
	}
	case M_EXPORT: {
		struct db_layout layout;
		const char *name;

		r = db_spec_parse_export(m, reg, 1u << 20, &layout, &name, &error);
		if (r >= 0)
			require(db_layout_validate(&layout, 1u << 20) >= 0 &&
				is_text(name, db_registry_limits(reg)->max_name_length,
					DB_TEXT_ASCII));
		break;
	}
	case M_SHARE: {
		struct db_share_opts o;

		r = db_spec_parse_share(m, 1000000, &o, &error);
		break;
	}
	case M_CREATE_COLLECTION: {
		struct db_collection_args a;

		r = db_args_create_collection(m, &a, &error);
		if (r >= 0)
			require(is_text(a.name, DB_TEXT_MAX, 0));
		break;
	}
	case M_CONSTRAINTS: {
		struct db_constraint_args a;
		struct db_constraints_error err;

		r = db_args_constraints(m, &a, &error);
		if (r >= 0) {
			require(is_text(a.device, 255, 0));
			for (size_t i = 0; i < a.c.n_backends; i++)
				require(is_text(a.backends[i], DB_CONSTRAINTS_NAME_MAX + 16, 0));
			/* What the handler does next: its refusal is text too. */
			a.c.name = "fuzz (client 1)";
			if (db_constraints_validate(&a.c, &err) < 0)
				require(is_text(err.message, sizeof(err.message), 0));
			db_constraint_args_clear(&a);
		}
		break;
	}
	case M_CREATE_STREAM: {
		struct db_stream_args a;

		r = db_args_create_stream(m, &a, &error);
		if (r >= 0)
			require(is_text(a.name, 255, 0) &&
				(a.mode == DB_STREAM_FIFO || a.mode == DB_STREAM_LATEST) &&
				(!a.format.framerate_num || a.format.framerate_den));
		break;
	}
	case M_JOIN_STREAM: {
		struct db_join_stream_args a;
		struct db_constraints_error err;

		r = db_args_join_stream(m, &a, &error);
		if (r >= 0) {
			require(is_text(a.label, 255, 0));
			if (a.has_constraints) {
				require(is_text(a.constraints.device, 255, 0));
				a.constraints.c.name = "fuzz (client 1)";
				if (db_constraints_validate(&a.constraints.c, &err) < 0)
					require(is_text(err.message, sizeof(err.message), 0));
			}
			db_join_stream_args_clear(&a);
		}
		break;
	}
	case M_REASON: {
		const char *reason;

		r = db_bus_read_text(m, "reason", 256, 0, &reason, &error);
		if (r >= 0)
			require(is_text(reason, 256, 0));
		break;
	}
	case M_PATH: {
		const char *path;

		r = db_bus_read_path(m, "buffer", &path, &error);
		if (r >= 0)
			require(is_text(path, DB_BUS_PATH_MAX, DB_TEXT_ASCII));
		break;
	}
	case M_END_STREAM_LINK: {
		struct db_end_link_args a;

		r = db_args_end_stream_link(m, &a, &error);
		if (r >= 0)
			require(is_text(a.stream, DB_BUS_PATH_MAX, DB_TEXT_ASCII) &&
				is_text(a.reason, DB_TEXT_MAX, 0));
		break;
	}
	case M_TAKE_STREAM_LINK: {
		struct db_take_link_args a;

		r = db_args_take_stream_link(m, &a, &error);
		if (r >= 0)
			require(is_text(a.stream, DB_BUS_PATH_MAX, DB_TEXT_ASCII));
		break;
	}
	case M_TOKEN:
	default: {
		struct db_token_bytes t;

		r = db_bus_read_token(m, &t, &error);
		break;
	}
	}
	/* A refusal is in words, never the client's bytes: what reaches the caller and a log. */
	if (sd_bus_error_is_set(&error))
		require(r < 0 && is_text(error.message, 4096, 0));
	sd_bus_error_free(&error);
	sd_bus_message_unref(m);
	return 0;
}
