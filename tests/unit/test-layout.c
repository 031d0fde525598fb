// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stdint.h>
#include <drm_fourcc.h>

#include "layout.h"
#include "tap.h"

/* An NV12 layout with its chroma plane where the caller says. */
static struct db_layout nv12(uint32_t w, uint32_t h, uint32_t stride0, uint32_t offset1,
			     uint32_t stride1)
{
	return (struct db_layout){
		.width = w,
		.height = h,
		.fourcc = DRM_FORMAT_NV12,
		.modifier = DRM_FORMAT_MOD_LINEAR,
		.n_planes = 2,
		.offsets = {0, offset1},
		.strides = {stride0, stride1},
	};
}

/*
 * The layouts Export accepted that no image can have. Each of these returned 0 before the
 * validator took subsampling into account and did its arithmetic with checks.
 */
static void test_validate_reproduced(void)
{
	struct db_layout l;

	/* Odd sizes: NV12 chroma is one sample per 2x2 block, so there is no half block. */
	l = nv12(641, 480, 642, 642 * 480, 642);
	tap_is(db_layout_validate(&l, 1 << 20), -EINVAL, "NV12 with an odd width is refused");
	l = nv12(640, 481, 640, 640 * 481, 640);
	tap_is(db_layout_validate(&l, 1 << 20), -EINVAL, "NV12 with an odd height is refused");
	l = (struct db_layout){
		.width = 3, .height = 2, .fourcc = DRM_FORMAT_YUYV, .n_planes = 1, .strides = {6}};
	tap_is(db_layout_validate(&l, 4096), -EINVAL, "YUYV with an odd width is refused");

	/*
	 * Height 1: the chroma plane had height / 2 = 0 rows, and "rows - 1" wrapped to
	 * 2^64 - 1, so the plane's end came out as offset - stride + row bytes.
	 */
	l = nv12(2, 1, 2, 2, 2);
	tap_is(db_layout_validate(&l, 4), -EINVAL, "NV12 2x1 (a zero-row chroma plane) is refused");

	/*
	 * The same wrap hid a chroma plane near 4 GiB in a 4 KiB buffer: with stride and
	 * offset both 0xfffff000 the end computed to 2.
	 */
	l = nv12(2, 1, 2, 0xfffff000u, 0xfffff000u);
	tap_ok(db_layout_validate(&l, 4096) < 0, "a chroma offset near 4 GiB in 4 KiB is refused");
	/* ... and with a legal size the end is past 4 GiB, which a 32-bit sum would wrap to
	 * 0x100 and take. */
	l = nv12(32, 32, 32, 0xffffff00u, 32);
	tap_is(db_layout_validate(&l, 4096), -ERANGE,
	       "a chroma plane ending past 4 GiB does not wrap into a 4 KiB buffer");

	/* Rows rounded down: 481 lines of luma need 241 lines of chroma, not 240. */
	l = nv12(640, 481, 640, 640 * 481, 640);
	tap_is(db_layout_validate(&l, 640 * 481 + 640 * 240), -EINVAL,
	       "NV12 640x481 with 240 chroma rows is refused");
	l = (struct db_layout){.width = 641,
			       .height = 480,
			       .fourcc = DRM_FORMAT_YUV420,
			       .n_planes = 3,
			       .offsets = {0, 641 * 480, 641 * 480 + 320 * 240},
			       .strides = {641, 320, 320}};
	tap_is(db_layout_validate(&l, 641 * 480 + 2 * 320 * 240), -EINVAL,
	       "YUV420 641 wide with 320-byte chroma rows is refused");
}

static void test_validate_edges(void)
{
	struct db_layout l;
	uint64_t end;

	/* Exact fits pass and one byte more fails, for the last row of each plane, which
	 * needs its pixels but not its stride's padding. */
	l = (struct db_layout){.width = 100,
			       .height = 2,
			       .fourcc = DRM_FORMAT_R8,
			       .n_planes = 1,
			       .strides = {128}};
	tap_is(db_layout_validate(&l, 128 + 100), 0, "R8: the last row needs no padding");
	tap_is(db_layout_validate(&l, 128 + 99), -ERANGE, "R8: one byte short fails");
	l.strides[0] = 100;
	tap_is(db_layout_validate(&l, 200), 0, "a stride equal to the row passes");
	l.strides[0] = 99;
	tap_is(db_layout_validate(&l, 1 << 20), -EINVAL,
	       "a stride one byte short of the row fails");

	l = nv12(64, 64, 64, 64 * 64, 64);
	tap_is(db_layout_validate(&l, 64 * 64 + 64 * 32), 0, "NV12 64x64: exact fit passes");
	tap_is(db_layout_validate(&l, 64 * 64 + 64 * 32 - 1), -ERANGE,
	       "NV12 64x64: chroma one byte over the end fails");
	l.offsets[1] = 64 * 64 + 1;
	tap_is(db_layout_validate(&l, 64 * 64 + 64 * 32), -ERANGE,
	       "NV12 64x64: chroma moved one byte on fails");
	l = nv12(64, 64, 64, 64 * 64, 63);
	tap_is(db_layout_validate(&l, 1 << 20), -EINVAL,
	       "NV12: a chroma stride under 2 bytes per sample fails");
	/* Planes may overlap or come in any order: the check is that each is inside. */
	l = nv12(64, 64, 64, 0, 64);
	tap_is(db_layout_validate(&l, 64 * 64), 0, "planes may share bytes");

	l = nv12(64, 64, 64, 64 * 64, 64);
	l.n_planes = 1;
	tap_is(db_layout_validate(&l, 1 << 20), -EINVAL, "NV12 with one plane fails");
	l.n_planes = 3;
	tap_is(db_layout_validate(&l, 1 << 20), -EINVAL, "NV12 with three planes fails");
	l.n_planes = 2;
	l.width = 0;
	tap_is(db_layout_validate(&l, 1 << 20), -EINVAL, "zero width fails");
	l.width = 64;
	l.height = 0;
	tap_is(db_layout_validate(&l, 1 << 20), -EINVAL, "zero height fails");
	l.height = 64;
	l.modifier = DRM_FORMAT_MOD_INVALID;
	tap_is(db_layout_validate(&l, 1 << 20), -EOPNOTSUPP, "only LINEAR: not MOD_INVALID");
	l.modifier = I915_FORMAT_MOD_X_TILED;
	tap_is(db_layout_validate(&l, 1 << 20), -EOPNOTSUPP, "only LINEAR: not X-tiled");
	l.modifier = DRM_FORMAT_MOD_LINEAR;
	l.fourcc = 0x20202020;
	tap_is(db_layout_validate(&l, 1 << 20), -EOPNOTSUPP, "unknown fourcc");

	l = (struct db_layout){0};
	tap_is(db_layout_validate(&l, 4096), 0, "a plain buffer has no planes");
	l.n_planes = 1;
	tap_is(db_layout_validate(&l, 4096), -EINVAL, "a plain buffer with a plane fails");
	l = (struct db_layout){.width = 64};
	tap_is(db_layout_validate(&l, 4096), -EINVAL, "a plain buffer with a width fails");

	/* The largest a u32 layout can reach: (2^32 - 1)^2 + 1, near 2^64, no wrap. */
	l = (struct db_layout){.width = 1,
			       .height = UINT32_MAX,
			       .fourcc = DRM_FORMAT_R8,
			       .n_planes = 1,
			       .offsets = {UINT32_MAX},
			       .strides = {UINT32_MAX}};
	end = (uint64_t)UINT32_MAX * UINT32_MAX + 1;
	if (end <= SIZE_MAX) {
		tap_is(db_layout_validate(&l, (size_t)end), 0, "the largest layout fits exactly");
		tap_is(db_layout_validate(&l, (size_t)end - 1), -ERANGE,
		       "the largest layout, one byte short");
	}
	l.width = UINT32_MAX;
	l.fourcc = DRM_FORMAT_XRGB8888;
	tap_is(db_layout_validate(&l, SIZE_MAX), -EINVAL,
	       "a row of 2^32 pixels needs more than a u32 stride");
}

static void test_plane_geometry(void)
{
	const struct db_format_info *nv12_fmt = db_format_lookup(DRM_FORMAT_NV12);
	const struct db_format_info *yuyv = db_format_lookup(DRM_FORMAT_YUYV);

	tap_is(db_format_plane_width(nv12_fmt, 0, 641), 641, "plane 0 is not subsampled");
	tap_is(db_format_plane_width(nv12_fmt, 1, 641), 321, "subsampled columns round up");
	tap_is(db_format_plane_height(nv12_fmt, 1, 481), 241, "subsampled rows round up");
	tap_is(db_format_plane_height(nv12_fmt, 1, UINT32_MAX), 0x80000000u,
	       "rounding up UINT32_MAX does not wrap");
	tap_is(db_format_plane_width(yuyv, 0, 641), 641, "YUYV's one plane is full width");
}

/* Whatever compute lays out, validate must take, at exactly the computed size. */
static void test_computed_layouts_validate(void)
{
	static const uint32_t fourccs[] = {
		DRM_FORMAT_XRGB8888, DRM_FORMAT_ARGB8888, DRM_FORMAT_XBGR8888,
		DRM_FORMAT_ABGR8888, DRM_FORMAT_RGB565,	  DRM_FORMAT_R8,
		DRM_FORMAT_YUYV,     DRM_FORMAT_NV12,	  DRM_FORMAT_YUV420,
	};
	static const uint32_t sizes[][2] = {{2, 2}, {64, 64}, {640, 360}, {1920, 1080}, {2, 4096}};
	unsigned bad = 0, n = 0;

	for (size_t f = 0; f < sizeof(fourccs) / sizeof(fourccs[0]); f++) {
		for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
			struct db_layout l;

			if (db_layout_compute(sizes[s][0], sizes[s][1], fourccs[f], 0, 64, &l) < 0)
				continue;
			n++;
			if (db_layout_validate(&l, l.size) != 0)
				bad++;
		}
	}
	tap_ok(n == 45 && bad == 0, "%u computed layouts validate exactly (%u bad)", n, bad);
}

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
	tap_is(db_layout_validate(&l, l.size - 1), -ERANGE, "one byte short does not");
	l.strides[0] = 100;
	tap_is(db_layout_validate(&l, 1 << 30), -EINVAL, "a stride narrower than a row does not");

	test_validate_reproduced();
	test_validate_edges();
	test_plane_geometry();
	test_computed_layouts_validate();

	tap_is(db_size_page_align(1, &aligned), 0, "1 byte aligns");
	tap_is(db_size_page_align(UINT64_MAX - 10, &aligned), -EOVERFLOW,
	       "near 2^64 overflows instead of wrapping");
	return tap_done();
}
