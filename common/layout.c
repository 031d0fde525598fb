// SPDX-License-Identifier: MIT
#include "layout.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <drm_fourcc.h>

#include "macros.h"

static const struct db_format_info formats[] = {
	{DRM_FORMAT_XRGB8888, "XRGB8888", 1, {4}, 1, 1},
	{DRM_FORMAT_ARGB8888, "ARGB8888", 1, {4}, 1, 1},
	{DRM_FORMAT_XBGR8888, "XBGR8888", 1, {4}, 1, 1},
	{DRM_FORMAT_ABGR8888, "ABGR8888", 1, {4}, 1, 1},
	{DRM_FORMAT_RGB565, "RGB565", 1, {2}, 1, 1},
	{DRM_FORMAT_R8, "R8", 1, {1}, 1, 1},
	/* Packed 4:2:2: one plane, two bytes per pixel; width must be even. */
	{DRM_FORMAT_YUYV, "YUYV", 1, {2}, 2, 1},
	{DRM_FORMAT_NV12, "NV12", 2, {1, 2}, 2, 2},
	{DRM_FORMAT_YUV420, "YUV420", 3, {1, 1, 1}, 2, 2},
};

const struct db_format_info *db_format_lookup(uint32_t fourcc)
{
	for (size_t i = 0; i < ARRAY_SIZE(formats); i++)
		if (formats[i].fourcc == fourcc)
			return &formats[i];
	return NULL;
}

const char *db_fourcc_str(uint32_t fourcc, char buf[static 5])
{
	for (int i = 0; i < 4; i++) {
		char c = (char)((fourcc >> (8 * i)) & 0xff);

		buf[i] = (c >= 0x20 && c < 0x7f) ? c : '?';
	}
	buf[4] = '\0';
	return buf;
}

uint32_t db_format_plane_width(const struct db_format_info *fmt, unsigned p, uint32_t width)
{
	/* In 64 bits: width + hsub - 1 wraps at UINT32_MAX in 32. */
	return p ? (uint32_t)(((uint64_t)width + fmt->hsub - 1) / fmt->hsub) : width;
}

uint32_t db_format_plane_height(const struct db_format_info *fmt, unsigned p, uint32_t height)
{
	return p ? (uint32_t)(((uint64_t)height + fmt->vsub - 1) / fmt->vsub) : height;
}

/*
 * Zero sizes have no image, and sizes that split a subsampled block have no layout the
 * kernel or a codec agrees on. hsub counts for YUYV too: its one plane holds a pixel pair
 * per sample pair.
 */
static bool sizes_fit_format(const struct db_format_info *fmt, uint32_t width, uint32_t height)
{
	return width && height && width % fmt->hsub == 0 && height % fmt->vsub == 0;
}

/* Bytes a row of plane p needs: its columns times bytes per sample, at most 2^34. */
static uint64_t plane_row_bytes(const struct db_format_info *fmt, unsigned p, uint32_t width)
{
	return (uint64_t)db_format_plane_width(fmt, p, width) * fmt->cpp[p];
}

int db_layout_compute(uint32_t width, uint32_t height, uint32_t fourcc, uint64_t modifier,
		      uint32_t stride_align, struct db_layout *ret)
{
	const struct db_format_info *fmt;
	struct db_layout l = {0};
	uint64_t offset = 0;

	if (!IS_POWER_OF_2(stride_align) || stride_align > 4096)
		return -EINVAL;
	fmt = db_format_lookup(fourcc);
	if (!fmt)
		return -EOPNOTSUPP;
	if (modifier != DRM_FORMAT_MOD_LINEAR && modifier != DRM_FORMAT_MOD_INVALID)
		return -EOPNOTSUPP;
	if (!sizes_fit_format(fmt, width, height))
		return -EINVAL;

	l.width = width;
	l.height = height;
	l.fourcc = fourcc;
	l.modifier = DRM_FORMAT_MOD_LINEAR;
	l.n_planes = fmt->n_planes;
	for (unsigned p = 0; p < fmt->n_planes; p++) {
		uint64_t rows = db_format_plane_height(fmt, p, height);
		uint64_t stride, plane_size;

		/* The row is at most 2^34 bytes, so aligning it cannot wrap 64 bits; the
		 * 32-bit stride and offset fields can overflow, so check those first. */
		stride = ALIGN_UP(plane_row_bytes(fmt, p, width), (uint64_t)stride_align);
		if (stride > UINT32_MAX || offset > UINT32_MAX)
			return -EOVERFLOW;
		l.strides[p] = (uint32_t)stride;
		l.offsets[p] = (uint32_t)offset;
		if (__builtin_mul_overflow(stride, rows, &plane_size) ||
		    __builtin_add_overflow(offset, plane_size, &offset))
			return -EOVERFLOW;
	}
	if (offset > SIZE_MAX)
		return -EOVERFLOW;
	l.size = (size_t)offset;
	*ret = l;
	return 0;
}

int db_layout_validate(const struct db_layout *l, size_t buffer_size)
{
	const struct db_format_info *fmt;

	/* A plain buffer: any geometry on it would be a layout nobody checked. */
	if (l->fourcc == 0) {
		bool bare = l->n_planes == 0 && l->width == 0 && l->height == 0 &&
			    l->modifier == DRM_FORMAT_MOD_LINEAR;

		return bare ? 0 : -EINVAL;
	}
	fmt = db_format_lookup(l->fourcc);
	if (!fmt)
		return -EOPNOTSUPP;
	if (l->modifier != DRM_FORMAT_MOD_LINEAR)
		return -EOPNOTSUPP;
	if (l->n_planes != fmt->n_planes || !sizes_fit_format(fmt, l->width, l->height))
		return -EINVAL;
	for (unsigned p = 0; p < fmt->n_planes; p++) {
		uint64_t row_bytes = plane_row_bytes(fmt, p, l->width);
		/* At least 1: height is non-zero and rows round up. */
		uint64_t rows = db_format_plane_height(fmt, p, l->height);
		uint64_t end;

		if (l->strides[p] < row_bytes)
			return -EINVAL;
		/*
		 * The plane is [offset, offset + stride * (rows - 1) + row_bytes): the last
		 * row needs its pixels, not the stride's padding. With 32-bit fields this
		 * stays under 2^64; the checks keep it so should a field ever widen.
		 */
		if (__builtin_mul_overflow((uint64_t)l->strides[p], rows - 1, &end) ||
		    __builtin_add_overflow(end, (uint64_t)l->offsets[p], &end) ||
		    __builtin_add_overflow(end, row_bytes, &end) || end > (uint64_t)buffer_size)
			return -ERANGE;
	}
	return 0;
}

int db_size_page_align(uint64_t size, size_t *ret)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t aligned;

	if (__builtin_add_overflow(size, page - 1, &aligned))
		return -EOVERFLOW;
	aligned &= ~(page - 1);
	if (aligned > SIZE_MAX)
		return -EOVERFLOW;
	*ret = (size_t)aligned;
	return 0;
}
