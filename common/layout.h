/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* DMABROKER_MAX_PLANES: the public header's is the one definition. */
#include "dmabroker.h"

/*
 * Where the planes of an image lie in one buffer. A plain byte buffer has fourcc 0
 * and no planes. The one layout struct: the library hands its fields out through
 * dmabroker_buffer_get_*() and has no public twin to keep in step.
 */
struct db_layout {
	size_t size;
	uint32_t width;
	uint32_t height;
	uint32_t fourcc;
	uint64_t modifier;
	uint32_t n_planes;
	uint32_t offsets[DMABROKER_MAX_PLANES];
	uint32_t strides[DMABROKER_MAX_PLANES];
};

struct db_format_info {
	uint32_t fourcc;
	const char *name;
	uint8_t n_planes;
	/* Bytes per pixel of each plane, in units of its own (subsampled) grid. */
	uint8_t cpp[DMABROKER_MAX_PLANES];
	uint8_t hsub; /* horizontal subsampling of planes 1.. */
	uint8_t vsub; /* vertical subsampling of planes 1.. */
};

/* The formats the broker can lay out, or NULL. */
const struct db_format_info *db_format_lookup(uint32_t fourcc);

/*
 * Columns (pixels across) and rows of plane p of a width x height image of fmt. Planes
 * after the first are subsampled; a partial block still has its sample, so these round up
 * (as DRM's drm_format_info_plane_width/height do).
 */
uint32_t db_format_plane_width(const struct db_format_info *fmt, unsigned p, uint32_t width);
uint32_t db_format_plane_height(const struct db_format_info *fmt, unsigned p, uint32_t height);

/* "XR24" style name of a fourcc into buf (at least 5 bytes). */
const char *db_fourcc_str(uint32_t fourcc, char buf[static 5]);

/*
 * Lays out a width x height image of fourcc with each stride aligned to stride_align
 * (a power of two). modifier must be DRM_FORMAT_MOD_LINEAR or DRM_FORMAT_MOD_INVALID
 * (taken as linear). The total is not page-aligned here.
 * -EINVAL: zero or odd sizes a subsampled format cannot take, bad alignment;
 * -EOPNOTSUPP: unknown fourcc or modifier; -EOVERFLOW: the sizes overflow.
 */
int db_layout_compute(uint32_t width, uint32_t height, uint32_t fourcc, uint64_t modifier,
		      uint32_t stride_align, struct db_layout *ret);

/*
 * Checks a layout a client describes for a buffer of buffer_size bytes. A plain buffer
 * (fourcc 0) has no planes, width, height or modifier. An image has a known fourcc, the LINEAR modifier,
 * non-zero width and height divisible by the format's subsampling, exactly the format's
 * planes, each stride at least its plane's bytes per row, and each plane's bytes
 * [offset, offset + stride * (rows - 1) + bytes per row) inside the buffer. layout->size
 * is not looked at.
 * -EOPNOTSUPP: unknown fourcc or modifier; -EINVAL: no image has these sizes, planes or
 * strides; -ERANGE: a plane lies (partly) outside the buffer.
 */
int db_layout_validate(const struct db_layout *layout, size_t buffer_size);

/* Rounds size up to the page size; -EOVERFLOW if that wraps. */
int db_size_page_align(uint64_t size, size_t *ret);
