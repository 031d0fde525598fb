// SPDX-License-Identifier: MIT
#include "devices.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <libudev.h>
#include <xf86drm.h>

#include "macros.h"

struct db_devices {
	struct udev *udev;
	struct udev_monitor *monitor;
	GPtrArray *list;
	void (*changed)(void *userdata);
	void *userdata;
};

static const char *const watched_subsystems[] = {"drm", "video4linux", "dma_heap", "misc"};

const char *db_driver_import_mode(const char *subsystem, const char *driver)
{
	/* In Linux 6.12 only these drivers attach with move_notify (dynamic importers). */
	static const char *const dynamic_importers[] = {"amdgpu", "xe"};

	if (strcmp(subsystem, "drm") != 0 && strcmp(subsystem, "video4linux") != 0)
		return "";
	for (size_t i = 0; i < ARRAY_SIZE(dynamic_importers); i++)
		if (strcmp(driver, dynamic_importers[i]) == 0)
			return "dynamic";
	/* vgem, i915, virtio-gpu, and every vb2-based V4L2 driver map statically. */
	return "static";
}

static void device_free(gpointer p)
{
	struct db_device *d = p;

	g_free(d->subsystem);
	g_free(d->devnode);
	g_free(d->driver);
	g_free(d->kernel_name);
	g_free(d);
}

/* libdrm knows the DRM driver's name even where sysfs shows only a platform device. */
static char *drm_driver_name(const char *devnode)
{
	_cleanup_(closep) int fd = open(devnode, O_RDWR | O_CLOEXEC | O_NOCTTY);
	drmVersionPtr v;
	char *name;

	if (fd < 0)
		return NULL;
	v = drmGetVersion(fd);
	if (!v)
		return NULL;
	name = g_strndup(v->name, (gsize)v->name_len);
	drmFreeVersion(v);
	return name;
}

static bool wanted(const char *subsystem, const char *sysname)
{
	if (strcmp(subsystem, "drm") == 0)
		return g_str_has_prefix(sysname, "renderD");
	if (strcmp(subsystem, "misc") == 0)
		return strcmp(sysname, "udmabuf") == 0;
	return true;
}

static void add_device(struct db_devices *devs, struct udev_device *ud)
{
	const char *subsystem = udev_device_get_subsystem(ud);
	const char *sysname = udev_device_get_sysname(ud);
	const char *devnode = udev_device_get_devnode(ud);
	struct udev_device *parent = udev_device_get_parent(ud);
	struct db_device *d;
	char *driver = NULL;

	if (!subsystem || !sysname || !devnode || !wanted(subsystem, sysname))
		return;
	if (strcmp(subsystem, "drm") == 0)
		driver = drm_driver_name(devnode);
	if (!driver && parent && udev_device_get_driver(parent))
		driver = g_strdup(udev_device_get_driver(parent));
	d = g_new0(struct db_device, 1);
	d->subsystem = g_strdup(subsystem);
	d->devnode = g_strdup(devnode);
	d->driver = driver ? driver : g_strdup("");
	d->import_mode = db_driver_import_mode(d->subsystem, d->driver);
	d->kernel_name = g_strdup(parent ? udev_device_get_sysname(parent) : "");
	g_ptr_array_add(devs->list, d);
}

int db_devices_rescan(struct db_devices *devs)
{
	struct udev_enumerate *en = udev_enumerate_new(devs->udev);
	struct udev_list_entry *entry;

	if (!en)
		return -ENOMEM;
	for (size_t i = 0; i < ARRAY_SIZE(watched_subsystems); i++)
		udev_enumerate_add_match_subsystem(en, watched_subsystems[i]);
	udev_enumerate_scan_devices(en);
	g_ptr_array_set_size(devs->list, 0);
	udev_list_entry_foreach(entry, udev_enumerate_get_list_entry(en))
	{
		struct udev_device *ud =
			udev_device_new_from_syspath(devs->udev, udev_list_entry_get_name(entry));

		if (ud) {
			add_device(devs, ud);
			udev_device_unref(ud);
		}
	}
	udev_enumerate_unref(en);
	if (devs->changed)
		devs->changed(devs->userdata);
	return 0;
}

int db_devices_new(struct db_devices **ret, void (*changed)(void *userdata), void *userdata)
{
	struct db_devices *devs = g_new0(struct db_devices, 1);
	/* Without udevd (a minimal guest, a container) listen to the kernel's own events. */
	const char *source = access("/run/udev/control", F_OK) == 0 ? "udev" : "kernel";

	devs->udev = udev_new();
	if (!devs->udev) {
		g_free(devs);
		return -ENOMEM;
	}
	devs->list = g_ptr_array_new_with_free_func(device_free);
	devs->monitor = udev_monitor_new_from_netlink(devs->udev, source);
	if (devs->monitor) {
		for (size_t i = 0; i < ARRAY_SIZE(watched_subsystems); i++)
			udev_monitor_filter_add_match_subsystem_devtype(
				devs->monitor, watched_subsystems[i], NULL);
		if (udev_monitor_enable_receiving(devs->monitor) < 0)
			devs->monitor = udev_monitor_unref(devs->monitor);
	}
	db_devices_rescan(devs);
	devs->changed = changed;
	devs->userdata = userdata;
	*ret = devs;
	return 0;
}

struct db_devices *db_devices_free(struct db_devices *devs)
{
	if (!devs)
		return NULL;
	if (devs->monitor)
		udev_monitor_unref(devs->monitor);
	g_ptr_array_unref(devs->list);
	udev_unref(devs->udev);
	g_free(devs);
	return NULL;
}

int db_devices_get_fd(struct db_devices *devs)
{
	return devs->monitor ? udev_monitor_get_fd(devs->monitor) : -1;
}

int db_devices_process(struct db_devices *devs)
{
	struct udev_device *ud;
	int n = 0;

	if (!devs->monitor)
		return 0;
	while ((ud = udev_monitor_receive_device(devs->monitor))) {
		n++;
		udev_device_unref(ud);
	}
	return n > 0 ? db_devices_rescan(devs) : 0;
}

GPtrArray *db_devices_list(struct db_devices *devs)
{
	return devs->list;
}

const struct db_device *db_devices_find(struct db_devices *devs, const char *devnode)
{
	for (guint i = 0; i < devs->list->len; i++) {
		const struct db_device *d = g_ptr_array_index(devs->list, i);

		if (strcmp(d->devnode, devnode) == 0)
			return d;
	}
	return NULL;
}
