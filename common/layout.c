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

int db_layout_compute(uint32_t width, uint32_t height, uint32_t fourcc, uint64_t modifier,
		      uint32_t stride_align, struct db_layout *ret)
{
	const struct db_format_info *fmt;
	struct db_layout l = {0};
	uint64_t offset = 0;

	if (width == 0 || height == 0)
		return -EINVAL;
	if (!IS_POWER_OF_2(stride_align) || stride_align > 4096)
		return -EINVAL;
	fmt = db_format_lookup(fourcc);
	if (!fmt)
		return -EOPNOTSUPP;
	if (modifier != DRM_FORMAT_MOD_LINEAR && modifier != DRM_FORMAT_MOD_INVALID)
		return -EOPNOTSUPP;
	if (fmt->hsub > 1 && width % fmt->hsub)
		return -EINVAL;
	if (fmt->n_planes > 1 && fmt->vsub > 1 && height % fmt->vsub)
		return -EINVAL;

	l.width = width;
	l.height = height;
	l.fourcc = fourcc;
	l.modifier = DRM_FORMAT_MOD_LINEAR;
	l.n_planes = fmt->n_planes;
	for (unsigned p = 0; p < fmt->n_planes; p++) {
		uint64_t w = p ? width / fmt->hsub : width;
		uint64_t h = p ? height / fmt->vsub : height;
		uint64_t stride, plane_size;

		/* 32-bit inputs in 64-bit arithmetic cannot wrap here; the 32-bit
		 * stride and offset fields can, so check those. */
		stride = ALIGN_UP(w * fmt->cpp[p], (uint64_t)stride_align);
		plane_size = stride * h;
		if (stride > UINT32_MAX || offset > UINT32_MAX)
			return -EOVERFLOW;
		l.strides[p] = (uint32_t)stride;
		l.offsets[p] = (uint32_t)offset;
		if (__builtin_add_overflow(offset, plane_size, &offset))
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

	if (l->fourcc == 0)
		return l->n_planes == 0 ? 0 : -EINVAL;
	fmt = db_format_lookup(l->fourcc);
	if (!fmt)
		return -EOPNOTSUPP;
	if (l->modifier != DRM_FORMAT_MOD_LINEAR)
		return -EOPNOTSUPP;
	if (l->n_planes != fmt->n_planes || l->width == 0 || l->height == 0)
		return -EINVAL;
	for (unsigned p = 0; p < l->n_planes; p++) {
		uint64_t w = p ? l->width / fmt->hsub : l->width;
		uint64_t h = p ? l->height / fmt->vsub : l->height;
		uint64_t end;

		if ((uint64_t)l->strides[p] < w * fmt->cpp[p])
			return -EINVAL;
		/* The last row needs only its pixels, not the whole stride. */
		end = (uint64_t)l->offsets[p] + (uint64_t)l->strides[p] * (h - 1) + w * fmt->cpp[p];
		if (end > buffer_size)
			return -EINVAL;
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
