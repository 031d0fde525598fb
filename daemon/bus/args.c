// SPDX-License-Identifier: MIT
#include "args.h"

#include <string.h>

#include "bus-dict.h"
#include "bus-text.h"
#include "macros.h"
#include "protocol.h"
#include "registry.h"
#include "text.h"

/* A device node's path: what the kernel allows, and what a label quotes. */
#define DEVICE_PATH_MAX 255

int db_args_register(sd_bus_message *m, struct db_register_args *ret, sd_bus_error *error)
{
	struct db_register_args a = {.role = "cpu", .name = ""};
	struct db_dict_field f[] = {
		{"role", DB_DICT_STRING, &a.role},
		{"dynamic", DB_DICT_BOOL, &a.dynamic},
		{"name", DB_DICT_STRING, &a.name},
		{"devices", DB_DICT_STRV, &a.devices, 16, .max_bytes = DEVICE_PATH_MAX},
		{"compact_layouts", DB_DICT_BOOL, &a.compact_layouts},
	};
	int r;

	r = db_dict_read(m, f, ARRAY_SIZE(f), "info", error);
	if (r < 0)
		goto fail;
	/* The role passed the text check: it may be quoted. */
	if (!db_role_is_valid(a.role)) {
		r = sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
				      "info: role '%s' is not one of gpu, media, cpu, compositor",
				      a.role);
		goto fail;
	}
	for (size_t i = 0; a.devices && a.devices[i]; i++)
		/* Under /dev and staying there: no "." or ".." component, no empty one. */
		if (strncmp(a.devices[i], "/dev/", 5) != 0 || strstr(a.devices[i], "/../") ||
		    strstr(a.devices[i], "/./") || strstr(a.devices[i], "//") ||
		    g_str_has_suffix(a.devices[i], "/..") || g_str_has_suffix(a.devices[i], "/.") ||
		    g_str_has_suffix(a.devices[i], "/")) {
			char shown[80];

			r = sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					      "info: devices: '%s' is not a device node under /dev",
					      db_text_escape(a.devices[i], shown, sizeof(shown)));
			goto fail;
		}
	*ret = a;
	return 0;
fail:
	db_register_args_clear(&a);
	return r;
}

void db_register_args_clear(struct db_register_args *a)
{
	db_strv_free(a->devices);
	a->devices = NULL;
}

int db_args_create_collection(sd_bus_message *m, struct db_collection_args *ret,
			      sd_bus_error *error)
{
	struct db_collection_args a = {.name = ""};
	struct db_dict_field f[] = {
		{"name", DB_DICT_STRING, &a.name},
		{"participants", DB_DICT_U32, &a.participants},
	};
	int r;

	r = db_dict_read(m, f, ARRAY_SIZE(f), "options", error);
	if (r < 0)
		return r;
	*ret = a;
	return 0;
}

static bool set_is_valid(size_t n, bool seen)
{
	return !seen || n > 0;
}

int db_args_constraints(sd_bus_message *m, struct db_constraint_args *ret, sd_bus_error *error)
{
	struct db_constraint_args a = {.device = ""};
	uint32_t n_fourccs = 0, n_modifiers = 0, n_min = 0, n_max = 0;
	size_t n_backends = 0;
	struct db_dict_field f[] = {
		{"device", DB_DICT_STRING, &a.device, .max_bytes = DEVICE_PATH_MAX},
		{"min-buffers-for-camping", DB_DICT_U32, &a.c.min_buffer_count_for_camping},
		{"min-buffers", DB_DICT_U32, &a.c.min_buffer_count},
		{"max-buffers", DB_DICT_U32, &a.c.max_buffer_count},
		{"min-size", DB_DICT_U64, &a.c.min_size},
		{"max-size", DB_DICT_U64, &a.c.max_size},
		{"size-divisor", DB_DICT_U32, &a.c.size_divisor},
		{"fourccs", DB_DICT_U32_ARRAY, a.fourccs, DB_CONSTRAINTS_MAX_SET, &n_fourccs},
		{"modifiers", DB_DICT_U64_ARRAY, a.modifiers, DB_CONSTRAINTS_MAX_SET, &n_modifiers},
		{"min-width", DB_DICT_U32, &a.c.min_width},
		{"max-width", DB_DICT_U32, &a.c.max_width},
		{"min-height", DB_DICT_U32, &a.c.min_height},
		{"max-height", DB_DICT_U32, &a.c.max_height},
		{"width", DB_DICT_U32, &a.c.width},
		{"height", DB_DICT_U32, &a.c.height},
		{"min-strides", DB_DICT_U32_ARRAY, a.c.min_stride, DMABROKER_MAX_PLANES, &n_min},
		{"max-strides", DB_DICT_U32_ARRAY, a.c.max_stride, DMABROKER_MAX_PLANES, &n_max},
		{"stride-divisor", DB_DICT_U32, &a.c.stride_divisor},
		{"offset-divisor", DB_DICT_U32, &a.c.offset_divisor},
		{"contiguous", DB_DICT_BOOL, &a.c.contiguous},
		{"max-segment-size", DB_DICT_U64, &a.c.max_segment_size},
		{"dma-address-bits", DB_DICT_U32, &a.c.dma_address_bits},
		{"device-import", DB_DICT_BOOL, &a.c.device},
		{"backends", DB_DICT_STRV, &a.backends, DB_CONSTRAINTS_MAX_SET,
		 .max_bytes = DB_CONSTRAINTS_NAME_MAX + 16},
		{"cpu-read", DB_DICT_BOOL, &a.c.cpu_read},
		{"cpu-write", DB_DICT_BOOL, &a.c.cpu_write},
	};
	int r;

	r = db_dict_read(m, f, ARRAY_SIZE(f), "constraints", error);
	if (r < 0) {
		db_constraint_args_clear(&a);
		return r;
	}
	while (a.backends && a.backends[n_backends])
		n_backends++;
	if (!set_is_valid(n_fourccs, f[7].seen) || !set_is_valid(n_modifiers, f[8].seen) ||
	    !set_is_valid(n_backends, f[23].seen)) {
		db_constraint_args_clear(&a);
		return sd_bus_error_setf(
			error, DB_ERROR_INVALID_ARGUMENT,
			"constraints: a set (fourccs, modifiers, backends) that is "
			"given may not be empty");
	}
	a.c.n_fourccs = n_fourccs;
	a.c.n_modifiers = n_modifiers;
	a.c.n_backends = n_backends;
	*ret = a;
	/* The sets point into the caller's copy, not into this frame. */
	db_constraint_args_relink(ret);
	return 0;
}

void db_constraint_args_clear(struct db_constraint_args *a)
{
	db_strv_free(a->backends);
	a->backends = NULL;
	a->c.backends = NULL;
	a->c.n_backends = 0;
}

void db_constraint_args_relink(struct db_constraint_args *a)
{
	a->c.fourccs = a->c.n_fourccs ? a->fourccs : NULL;
	a->c.modifiers = a->c.n_modifiers ? a->modifiers : NULL;
	a->c.backends = a->c.n_backends ? (const char *const *)a->backends : NULL;
}

static int read_stream_format(sd_bus_message *m, void *dest, sd_bus_error *error)
{
	struct db_stream_format *fmt = dest;
	struct db_dict_field f[] = {
		{"fourcc", DB_DICT_U32, &fmt->fourcc},
		{"width", DB_DICT_U32, &fmt->width},
		{"height", DB_DICT_U32, &fmt->height},
		{"framerate-num", DB_DICT_U32, &fmt->framerate_num},
		{"framerate-den", DB_DICT_U32, &fmt->framerate_den},
	};

	return db_dict_read(m, f, ARRAY_SIZE(f), "options: 'format'", error);
}

int db_args_create_stream(sd_bus_message *m, struct db_stream_args *ret, sd_bus_error *error)
{
	struct db_stream_args a = {.name = ""};
	const char *mode = "fifo";
	struct db_dict_field f[] = {
		{"name", DB_DICT_STRING, &a.name, .max_bytes = 255},
		{"mode", DB_DICT_STRING, &mode, .max_bytes = 16},
		{"max-consumers", DB_DICT_U32, &a.max_consumers},
		{"format", DB_DICT_DICT, &a.format, .read_dict = read_stream_format},
	};
	int r;

	r = db_dict_read(m, f, ARRAY_SIZE(f), "options", error);
	if (r < 0)
		return r;
	if (strcmp(mode, "fifo") == 0)
		a.mode = DB_STREAM_FIFO;
	else if (strcmp(mode, "latest") == 0)
		a.mode = DB_STREAM_LATEST;
	else
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "options: 'mode' is \"fifo\" or \"latest\"");
	if (f[2].seen && a.max_consumers == 0)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "options: 'max-consumers' is at least 1");
	if (a.format.framerate_num && !a.format.framerate_den)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "options: 'format': a framerate needs a non-zero "
					 "'framerate-den'");
	*ret = a;
	return 0;
}

static int read_join_constraints(sd_bus_message *m, void *dest, sd_bus_error *error)
{
	return db_args_constraints(m, dest, error);
}

int db_args_join_stream(sd_bus_message *m, struct db_join_stream_args *ret, sd_bus_error *error)
{
	struct db_join_stream_args a = {.label = ""};
	struct db_dict_field f[] = {
		{"required", DB_DICT_BOOL, &a.required},
		{"label", DB_DICT_STRING, &a.label, .max_bytes = 255},
		{"constraints", DB_DICT_DICT, &a.constraints, .read_dict = read_join_constraints},
	};
	int r;

	r = db_dict_read(m, f, ARRAY_SIZE(f), "options", error);
	a.has_constraints = f[2].seen;
	if (r < 0) {
		db_join_stream_args_clear(&a);
		return r;
	}
	*ret = a;
	/* The sets point into the caller's copy, not into this frame. */
	db_constraint_args_relink(&ret->constraints);
	return 0;
}

void db_join_stream_args_clear(struct db_join_stream_args *a)
{
	db_constraint_args_clear(&a->constraints);
	a->has_constraints = false;
}

int db_args_end_stream_link(sd_bus_message *m, struct db_end_link_args *ret, sd_bus_error *error)
{
	struct db_end_link_args a = {0};
	int r;

	r = db_bus_read_path(m, "stream", &a.stream, error);
	if (r < 0)
		return r;
	if (sd_bus_message_read_basic(m, 'u', &a.consumer) <= 0)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "consumer: expected a number (u)");
	/* It reaches both ends and the monitor. */
	r = db_bus_read_text(m, "reason", DB_TEXT_MAX, 0, &a.reason, error);
	if (r < 0)
		return r;
	*ret = a;
	return 0;
}

int db_args_take_stream_link(sd_bus_message *m, struct db_take_link_args *ret, sd_bus_error *error)
{
	struct db_take_link_args a = {0};
	int r;

	r = db_bus_read_path(m, "stream", &a.stream, error);
	if (r < 0)
		return r;
	if (sd_bus_message_read_basic(m, 'u', &a.consumer) <= 0)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "consumer: expected a number (u)");
	*ret = a;
	return 0;
}
