/* SPDX-License-Identifier: MIT */
#pragma once

#include <glib.h>
#include <stdbool.h>

/* A device the daemon sees: a DRM render node, a V4L2 node, a dma-heap, udmabuf. */
struct db_device {
	char *subsystem; /* "drm", "video4linux", "dma_heap", "misc" */
	char *devnode; /* "/dev/dri/renderD128" */
	char *driver; /* "vgem", "vivid", "" */
	/*
	 * How the driver attaches an imported dma-buf: "dynamic" (amdgpu, xe), "static"
	 * (vgem, V4L2's vb2, most others) or "" (not an importer). The kernel decides this
	 * per importing driver, not per process.
	 */
	const char *import_mode;
	char *kernel_name; /* dev_name() of the device a dma-buf attaches to: "vgem", "vivid.0" */
};

struct db_devices;

/* Enumerates with libudev and watches for hotplug; changed runs after each rescan. */
int db_devices_new(struct db_devices **ret, void (*changed)(void *userdata), void *userdata);
struct db_devices *db_devices_free(struct db_devices *devs);

/* The hotplug monitor's fd (poll for input), or -1 without one. */
int db_devices_get_fd(struct db_devices *devs);
/* Drains hotplug events; rescans if any concerned us. */
int db_devices_process(struct db_devices *devs);
int db_devices_rescan(struct db_devices *devs);

GPtrArray *db_devices_list(struct db_devices *devs); /* struct db_device *, borrowed */
const struct db_device *db_devices_find(struct db_devices *devs, const char *devnode);

/* The import mode the kernel uses for a driver ("dynamic", "static"). */
const char *db_driver_import_mode(const char *subsystem, const char *driver);
