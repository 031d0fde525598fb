// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stdint.h>
#include <drm_fourcc.h>

#include "layout.h"
#include "tap.h"

int main(void)
{
	struct db_layout l;
	size_t aligned;

	tap_is(db_layout_compute(640, 480, DRM_FORMAT_XRGB8888, DRM_FORMAT_MOD_LINEAR, 64, &l), 0,
	       "XRGB8888 640x480");
	tap_is(l.n_planes, 1, "one plane");
	tap_is(l.strides[0], 2560, "stride 640*4");
	tap_is(l.size, 2560 * 480, "size stride*height");
	tap_is(db_layout_compute(100, 10, DRM_FORMAT_ARGB8888, DRM_FORMAT_MOD_LINEAR, 64, &l), 0,
	       "ARGB8888 100 wide");
	tap_is(l.strides[0], 448, "stride 400 aligned up to 448");

	tap_is(db_layout_compute(640, 360, DRM_FORMAT_NV12, DRM_FORMAT_MOD_LINEAR, 64, &l), 0,
	       "NV12 640x360");
	tap_is(l.n_planes, 2, "two planes");
	tap_is(l.offsets[1], 640 * 360, "chroma after luma");
	tap_is(l.strides[1], 640, "interleaved chroma: same stride");
	tap_is(l.size, 640 * 360 * 3 / 2, "size 1.5 bytes per pixel");

	tap_is(db_layout_compute(640, 360, DRM_FORMAT_YUV420, DRM_FORMAT_MOD_LINEAR, 64, &l), 0,
	       "YUV420 640x360");
	tap_is(l.n_planes, 3, "three planes");
	tap_is(l.strides[1], 320, "U stride half");
	tap_is(l.offsets[2], 640 * 360 + 320 * 180, "V after U");

	tap_is(db_layout_compute(0, 480, DRM_FORMAT_XRGB8888, 0, 64, &l), -EINVAL, "zero width");
	tap_is(db_layout_compute(641, 480, DRM_FORMAT_NV12, 0, 64, &l), -EINVAL,
	       "odd width for NV12");
	tap_is(db_layout_compute(64, 64, 0x20202020, 0, 64, &l), -EOPNOTSUPP, "unknown fourcc");
	tap_is(db_layout_compute(64, 64, DRM_FORMAT_XRGB8888, I915_FORMAT_MOD_X_TILED, 64, &l),
	       -EOPNOTSUPP, "tiled modifier");
	tap_is(db_layout_compute(64, 64, DRM_FORMAT_XRGB8888, 0, 48, &l), -EINVAL,
	       "stride_align not a power of two");
	tap_is(db_layout_compute(UINT32_MAX, UINT32_MAX, DRM_FORMAT_XRGB8888, 0, 64, &l),
	       -EOVERFLOW, "4G x 4G overflows");
	tap_is(db_layout_compute(UINT32_MAX, 1, DRM_FORMAT_XRGB8888, 0, 64, &l), -EOVERFLOW,
	       "a stride over 32 bits overflows");

	db_layout_compute(640, 480, DRM_FORMAT_XRGB8888, 0, 64, &l);
	tap_is(db_layout_validate(&l, l.size), 0, "a computed layout validates");
	tap_is(db_layout_validate(&l, l.size - 1), -EINVAL, "one byte short does not");
	l.strides[0] = 100;
	tap_is(db_layout_validate(&l, 1 << 30), -EINVAL, "a stride narrower than a row does not");

	tap_is(db_size_page_align(1, &aligned), 0, "1 byte aligns");
	tap_is(db_size_page_align(UINT64_MAX - 10, &aligned), -EOVERFLOW,
	       "near 2^64 overflows instead of wrapping");
	return tap_done();
}
