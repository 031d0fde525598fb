// SPDX-License-Identifier: MIT
#include "spec.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <drm_fourcc.h>

#include "bus-dict.h"
#include "macros.h"
#include "protocol.h"

#define DEFAULT_STRIDE_ALIGN 64
/* A token that outlives a month is a leak, not a share. */
#define MAX_TOKEN_LIFETIME_MS (30ull * 24 * 3600 * 1000)

static int check_name(const struct db_registry *reg, const char *name, sd_bus_error *error)
{
	int r = db_registry_check_name(reg, name);

	if (r == -ENAMETOOLONG)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "name is %zu bytes long, MaxNameLength is %" PRIu64,
					 strlen(name), db_registry_limits(reg)->max_name_length);
	if (r < 0)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "name may hold printable ASCII only");
	return 0;
}

static int layout_error(int r, uint32_t width, uint32_t height, uint32_t fourcc, uint64_t modifier,
			sd_bus_error *error)
{
	char name[5];

	if (r == -EOPNOTSUPP && !db_format_lookup(fourcc))
		return sd_bus_error_setf(error, DB_ERROR_UNSUPPORTED,
					 "fourcc 0x%08x ('%s') is not supported; supported: XR24 "
					 "AR24 XB24 AB24 RG16 R8 YUYV NV12 YU12",
					 fourcc, db_fourcc_str(fourcc, name));
	if (r == -EOPNOTSUPP)
		return sd_bus_error_setf(error, DB_ERROR_UNSUPPORTED,
					 "modifier 0x%" PRIx64
					 " is not supported; only DRM_FORMAT_MOD_LINEAR (0) is",
					 modifier);
	if (r == -EOVERFLOW)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "%ux%u %s does not fit in a buffer: the size overflows",
					 width, height, db_fourcc_str(fourcc, name));
	return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
				 "%ux%u is not a valid size for %s (zero, or odd where the format "
				 "subsamples), or stride_align is not a power of two up to 4096",
				 width, height, db_fourcc_str(fourcc, name));
}

int db_spec_parse_alloc(sd_bus_message *m, const struct db_registry *reg, struct db_alloc_plan *ret,
			sd_bus_error *error)
{
	uint64_t size = 0, modifier = DRM_FORMAT_MOD_LINEAR;
	uint32_t width = 0, height = 0, fourcc = 0, stride_align = DEFAULT_STRIDE_ALIGN;
	const char *backend = NULL, *name = "";
	bool contiguous = false;
	struct db_dict_field f[] = {
		{"size", DB_DICT_U64, &size},
		{"width", DB_DICT_U32, &width},
		{"height", DB_DICT_U32, &height},
		{"fourcc", DB_DICT_U32, &fourcc},
		{"modifier", DB_DICT_U64, &modifier},
		{"stride_align", DB_DICT_U32, &stride_align},
		{"backend", DB_DICT_STRING, &backend, .max_bytes = 64},
		{"name", DB_DICT_STRING, &name},
		{"contiguous", DB_DICT_BOOL, &contiguous},
	};
	bool image = f[1].seen || f[2].seen || f[3].seen;
	struct db_alloc_plan plan = {0};
	int r;

	r = db_dict_read(m, f, ARRAY_SIZE(f), "spec", error);
	if (r < 0)
		return r;
	image = f[1].seen || f[2].seen || f[3].seen || f[4].seen || f[5].seen;
	if (f[0].seen && image)
		return sd_bus_error_setf(
			error, DB_ERROR_INVALID_ARGUMENT,
			"spec: give either size or width, height and fourcc, not both");
	if (!f[0].seen && !image)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "spec: needs size, or width, height and fourcc");
	if (image) {
		if (!f[1].seen || !f[2].seen || !f[3].seen)
			return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
						 "spec: an image needs width, height and fourcc");
		r = db_layout_compute(width, height, fourcc, modifier, stride_align, &plan.layout);
		if (r < 0)
			return layout_error(r, width, height, fourcc, modifier, error);
		size = plan.layout.size;
	}
	if (size == 0)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "spec: size must be at least 1 byte");
	if (size > db_registry_limits(reg)->max_buffer_size)
		return sd_bus_error_setf(error, DB_ERROR_QUOTA_EXCEEDED,
					 "spec: %" PRIu64 " bytes exceed MaxBufferSize (%" PRIu64
					 ")",
					 size, db_registry_limits(reg)->max_buffer_size);
	r = db_size_page_align(size, &plan.size);
	if (r < 0)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "spec: size %" PRIu64 " overflows when page-aligned",
					 size);
	r = check_name(reg, name, error);
	if (r < 0)
		return r;
	plan.layout.size = plan.size;
	if (image)
		plan.asked = (struct db_layout){
			.width = width, .height = height, .fourcc = fourcc, .modifier = modifier};
	else
		plan.asked = (struct db_layout){.size = plan.size};
	plan.backend = backend;
	plan.name = name;
	plan.contiguous = contiguous;
	*ret = plan;
	return 0;
}

int db_spec_parse_export(sd_bus_message *m, const struct db_registry *reg, size_t size,
			 struct db_layout *ret_layout, const char **ret_name, sd_bus_error *error)
{
	struct db_layout l = {.modifier = DRM_FORMAT_MOD_LINEAR};
	uint32_t n_offsets = 0, n_strides = 0;
	const char *name = "";
	char fcc[5];
	struct db_dict_field f[] = {
		{"name", DB_DICT_STRING, &name},
		{"width", DB_DICT_U32, &l.width},
		{"height", DB_DICT_U32, &l.height},
		{"fourcc", DB_DICT_U32, &l.fourcc},
		{"modifier", DB_DICT_U64, &l.modifier},
		{"offsets", DB_DICT_U32_ARRAY, l.offsets, DMABROKER_MAX_PLANES, &n_offsets},
		{"strides", DB_DICT_U32_ARRAY, l.strides, DMABROKER_MAX_PLANES, &n_strides},
	};
	int r;

	r = db_dict_read(m, f, ARRAY_SIZE(f), "info", error);
	if (r < 0)
		return r;
	r = check_name(reg, name, error);
	if (r < 0)
		return r;
	if (f[3].seen) {
		if (n_offsets != n_strides)
			return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
						 "info: offsets and strides differ in length");
		l.n_planes = n_offsets;
		r = db_layout_validate(&l, size);
		if (r == -EOPNOTSUPP)
			return layout_error(r, l.width, l.height, l.fourcc, l.modifier, error);
		if (r == -ERANGE)
			return sd_bus_error_setf(
				error, DB_ERROR_INVALID_ARGUMENT,
				"info: a plane of the %ux%u %s layout lies outside "
				"the %zu-byte buffer (offsets or strides are wrong)",
				l.width, l.height, db_fourcc_str(l.fourcc, fcc), size);
		if (r < 0)
			return sd_bus_error_setf(
				error, DB_ERROR_INVALID_ARGUMENT,
				"info: %ux%u %s with %u planes is not a layout: sizes must be "
				"non-zero and divisible where the format subsamples, planes as "
				"many as the format has, each stride at least a row's bytes",
				l.width, l.height, db_fourcc_str(l.fourcc, fcc), l.n_planes);
	} else if (f[1].seen || f[2].seen || f[4].seen || f[5].seen || f[6].seen) {
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "info: a layout needs a fourcc");
	} else {
		l = (struct db_layout){0};
	}
	l.size = size;
	*ret_layout = l;
	*ret_name = name;
	return 0;
}

int db_spec_parse_share(sd_bus_message *m, uint64_t now_usec, struct db_share_opts *ret,
			sd_bus_error *error)
{
	struct db_share_opts o = {.single_use = true};
	uint64_t expires_in_ms = 0;
	struct db_dict_field f[] = {
		{"single_use", DB_DICT_BOOL, &o.single_use},
		{"expires_in_ms", DB_DICT_U64, &expires_in_ms},
		{"uid", DB_DICT_U32, &o.uid},
	};
	int r;

	r = db_dict_read(m, f, ARRAY_SIZE(f), "options", error);
	if (r < 0)
		return r;
	if (expires_in_ms > MAX_TOKEN_LIFETIME_MS)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "options: expires_in_ms is over 30 days");
	o.uid_bound = f[2].seen;
	o.expires_usec = expires_in_ms ? now_usec + expires_in_ms * 1000 : 0;
	*ret = o;
	return 0;
}
