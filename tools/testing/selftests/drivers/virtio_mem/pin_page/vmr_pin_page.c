// SPDX-License-Identifier: GPL-2.0
/*
 * Test helper for the virtio-mem guest tests: takes pages of online memory
 * away from the kernel and holds them, unmovable, until it is unloaded, so
 * that a test can stage memory that cannot be offlined or unplugged.
 *
 * Write a physical address to /sys/module/vmr_pin_page/parameters/pin: the
 * page there is migrated away if in use (alloc_contig_range()) and then held
 * by this module. Reading the parameter lists the pinned addresses. It can
 * also refuse the offlining of a memory block (veto_offline, below).
 */
#include <linux/gfp.h>
#include <linux/memory.h>
#include <linux/memory_hotplug.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>

#define MAX_PINNED 16

static unsigned long pinned[MAX_PINNED];
static int nr_pinned;
static DEFINE_MUTEX(pin_lock);

static int pin_set(const char *val, const struct kernel_param *kp)
{
	unsigned long long phys;
	unsigned long pfn;
	int ret;

	ret = kstrtoull(val, 0, &phys);
	if (ret)
		return ret;
	pfn = PHYS_PFN(phys);
	if (!pfn_to_online_page(pfn))
		return -EINVAL;
	mutex_lock(&pin_lock);
	if (nr_pinned == MAX_PINNED) {
		ret = -ENOSPC;
		goto out;
	}
	ret = alloc_contig_range(pfn, pfn + 1, ACR_FLAGS_NONE, GFP_KERNEL);
	if (ret)
		goto out;
	pinned[nr_pinned++] = pfn;
	pr_info("vmr_pin_page: holding the page at %#llx\n", (unsigned long long)PFN_PHYS(pfn));
out:
	mutex_unlock(&pin_lock);
	return ret;
}

static int pin_get(char *buf, const struct kernel_param *kp)
{
	int i, len = 0;

	mutex_lock(&pin_lock);
	for (i = 0; i < nr_pinned; i++)
		len += sysfs_emit_at(buf, len, "%#llx\n", (unsigned long long)PFN_PHYS(pinned[i]));
	mutex_unlock(&pin_lock);
	return len;
}

static const struct kernel_param_ops pin_ops = {
	.set = pin_set,
	.get = pin_get,
};
module_param_cb(pin, &pin_ops, NULL, 0600);
MODULE_PARM_DESC(pin, "physical address of a page to take and hold");

/*
 * Write "ADDR SIZE": dumps (dump_page()) the first pages of that online range
 * that offlining could neither skip nor migrate: not free, not PageOffline
 * without references, not on an LRU list.
 */
static int dump_set(const char *val, const struct kernel_param *kp)
{
	unsigned long long phys, size;
	unsigned long pfn, end;
	int shown = 0;

	if (sscanf(val, "%llx %llx", &phys, &size) != 2)
		return -EINVAL;
	for (pfn = PHYS_PFN(phys), end = PHYS_PFN(phys + size); pfn < end && shown < 8; pfn++) {
		struct page *page = pfn_to_online_page(pfn);

		if (page && PageBuddy(page)) {
			/* The order of a free buddy block is in its head's private field. */
			pfn += (1UL << page_private(page)) - 1;
			continue;
		}
		if (!page || PageLRU(page) || (PageOffline(page) && !page_count(page)))
			continue;
		dump_page(page, "vmr_pin_page: in the way of offlining");
		shown++;
	}
	pr_info("vmr_pin_page: %d pages in the way in [%#llx-%#llx)\n", shown, phys, phys + size);
	return 0;
}

static const struct kernel_param_ops dump_ops = {
	.set = dump_set,
};
module_param_cb(dump, &dump_ops, NULL, 0200);
MODULE_PARM_DESC(dump, "\"ADDR SIZE\" (hex): dump pages that would stop offlining");

/*
 * Write a physical address to veto_offline: offlining the memory block that
 * holds it is refused (this module's memory notifier answers MEM_GOING_OFFLINE
 * with NOTIFY_BAD) until 0 is written or the module is unloaded, so that a test
 * can stage an offline_and_remove_memory() of several blocks that fails after
 * the first ones went offline.
 */
static unsigned long veto_pfn_plus_one;

static int veto_set(const char *val, const struct kernel_param *kp)
{
	unsigned long long phys;
	int ret;

	ret = kstrtoull(val, 0, &phys);
	if (ret)
		return ret;
	WRITE_ONCE(veto_pfn_plus_one, phys ? PHYS_PFN(phys) + 1 : 0);
	return 0;
}

static int veto_get(char *buf, const struct kernel_param *kp)
{
	unsigned long pfn = READ_ONCE(veto_pfn_plus_one);

	return sysfs_emit(buf, "%#llx\n", pfn ? (unsigned long long)PFN_PHYS(pfn - 1) : 0ULL);
}

static const struct kernel_param_ops veto_ops = {
	.set = veto_set,
	.get = veto_get,
};
module_param_cb(veto_offline, &veto_ops, NULL, 0600);
MODULE_PARM_DESC(veto_offline, "physical address whose memory block may not go offline (0: none)");

static int veto_cb(struct notifier_block *nb, unsigned long action, void *arg)
{
	const struct memory_notify *mn = arg;
	unsigned long pfn = READ_ONCE(veto_pfn_plus_one);

	if (action != MEM_GOING_OFFLINE || !pfn--)
		return NOTIFY_OK;
	if (pfn < mn->start_pfn || pfn >= mn->start_pfn + mn->nr_pages)
		return NOTIFY_OK;
	pr_info("vmr_pin_page: refusing to offline [%#llx-%#llx]\n",
		(unsigned long long)PFN_PHYS(mn->start_pfn),
		(unsigned long long)PFN_PHYS(mn->start_pfn + mn->nr_pages) - 1);
	return NOTIFY_BAD;
}

static struct notifier_block veto_nb = {
	.notifier_call = veto_cb,
};

static void __exit vmr_pin_page_exit(void)
{
	int i;

	unregister_memory_notifier(&veto_nb);

	for (i = 0; i < nr_pinned; i++)
		free_contig_range(pinned[i], 1);
}

static int __init vmr_pin_page_init(void)
{
	return register_memory_notifier(&veto_nb);
}

module_init(vmr_pin_page_init);
module_exit(vmr_pin_page_exit);
MODULE_DESCRIPTION("Holds pages of online memory for virtio-mem tests");
MODULE_LICENSE("GPL");
