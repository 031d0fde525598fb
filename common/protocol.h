/* SPDX-License-Identifier: MIT */
#pragma once

/* Names shared by the daemon, the library and the tools; data/org.dmabroker.Broker1.xml
 * is the contract they spell. */

#define DB_BUS_NAME "org.dmabroker.Broker1"
#define DB_OBJECT_PATH "/org/dmabroker/Broker1"
#define DB_BUFFER_PATH_PREFIX "/org/dmabroker/Broker1/buffer"
#define DB_CLIENT_PATH_PREFIX "/org/dmabroker/Broker1/client"
#define DB_COLLECTION_PATH_PREFIX "/org/dmabroker/Broker1/collection"
#define DB_STREAM_PATH_PREFIX "/org/dmabroker/Broker1/stream"
#define DB_IFACE_BROKER "org.dmabroker.Broker1"
#define DB_IFACE_BUFFER "org.dmabroker.Buffer1"
#define DB_IFACE_CLIENT "org.dmabroker.Client1"

#define DB_ERROR_INVALID_ARGUMENT "org.dmabroker.Error.InvalidArgument"
#define DB_ERROR_NOT_REGISTERED "org.dmabroker.Error.NotRegistered"
#define DB_ERROR_NOT_FOUND "org.dmabroker.Error.NotFound"
#define DB_ERROR_PERMISSION_DENIED "org.dmabroker.Error.PermissionDenied"
#define DB_ERROR_QUOTA_EXCEEDED "org.dmabroker.Error.QuotaExceeded"
#define DB_ERROR_UNSUPPORTED "org.dmabroker.Error.Unsupported"
#define DB_ERROR_NO_DEVICE "org.dmabroker.Error.NoDevice"
#define DB_ERROR_BUSY "org.dmabroker.Error.Busy"
#define DB_ERROR_NO_MEMORY "org.dmabroker.Error.NoMemory"
#define DB_ERROR_FAILED "org.dmabroker.Error.Failed"

/* dbus-daemon refuses a message carrying more than 16 descriptors. */
#define DB_ALLOCATE_MANY_MAX 16

/* The environment variable that points clients and tools at a bus other than the system bus. */
#define DB_ENV_BUS_ADDRESS "DMABROKER_BUS_ADDRESS"

enum db_attach_path {
	DB_PATH_DIRECT,
	DB_PATH_CACHED,
};

/*
 * The kernel's rule (dma_buf_dynamic_attach): when importer and exporter disagree on
 * being dynamic, the mapping is made, pinned and cached at attach time.
 */
static inline enum db_attach_path db_attach_path_for(int importer_dynamic, int exporter_dynamic)
{
	return !!importer_dynamic == !!exporter_dynamic ? DB_PATH_DIRECT : DB_PATH_CACHED;
}

static inline const char *db_attach_path_name(enum db_attach_path p)
{
	return p == DB_PATH_CACHED ? "cached" : "direct";
}
