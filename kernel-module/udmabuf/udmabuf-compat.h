/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What building Linux 6.1's drivers/dma-buf/udmabuf.c as a module outside the kernel tree
 * needs: Kbuild includes this before udmabuf.c (-include), which stays as 6.1 ships it.
 *
 * - The dma-buf symbols are exported in the DMA_BUF namespace; in the tree the driver is built
 *   in (CONFIG_UDMABUF is a bool) and needs no import.
 * - memfd_fcntl() is not exported to modules: F_GET_SEALS is read the way mm/memfd.c does,
 *   from the shmem or hugetlbfs inode.
 * - is_file_hugepages() calls is_file_shm_hugepages() and compares with
 *   hugetlbfs_file_operations, neither exported: a hugetlbfs file is recognised by its
 *   superblock's magic (a memfd is never a SysV shm segment).
 */
#ifndef UDMABUF_COMPAT_H
#define UDMABUF_COMPAT_H

#include <linux/fcntl.h>
#include <linux/fs.h>
#include <linux/hugetlb.h>
#include <linux/memfd.h>
#include <linux/module.h>
#include <linux/shmem_fs.h>
#include <uapi/linux/magic.h>

MODULE_IMPORT_NS(DMA_BUF);
MODULE_DESCRIPTION("udmabuf from Linux 6.1, built out of tree (dmabroker kernel-module/udmabuf)");

static inline bool udmabuf_compat_is_hugetlbfs(struct file *file)
{
	return file_inode(file)->i_sb->s_magic == HUGETLBFS_MAGIC;
}

static inline long udmabuf_compat_memfd_fcntl(struct file *file, unsigned int cmd,
					      unsigned long arg)
{
	struct inode *inode = file_inode(file);

	if (cmd != F_GET_SEALS)
		return -EINVAL;
	if (shmem_file(file))
		return SHMEM_I(inode)->seals;
#ifdef CONFIG_HUGETLBFS
	if (udmabuf_compat_is_hugetlbfs(file))
		return HUGETLBFS_I(inode)->seals;
#endif
	return -EINVAL;
}

#define is_file_hugepages(file) udmabuf_compat_is_hugetlbfs(file)
#define memfd_fcntl(file, cmd, arg) udmabuf_compat_memfd_fcntl(file, cmd, arg)

#endif
