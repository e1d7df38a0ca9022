// SPDX-License-Identifier: GPL-2.0

#include <linux/mm.h>
#include <linux/mmzone.h>
#include <linux/nodemask.h>
#include <linux/vmstat.h>
#include <linux/page-flags.h>
#include <linux/page_ref.h>
#include <linux/pageblock-flags.h>

#ifdef CONFIG_RUST_MEMORY_HOTPLUG_ABSTRACTIONS

__rust_helper unsigned long rust_helper_pageblock_nr_pages(void)
{
	return pageblock_nr_pages;
}

__rust_helper struct page *rust_helper_pfn_to_page(unsigned long pfn)
{
	return pfn_to_page(pfn);
}

__rust_helper unsigned long rust_helper_page_to_pfn(const struct page *page)
{
	return page_to_pfn(page);
}

__rust_helper void rust_helper___SetPageOffline(struct page *page)
{
	__SetPageOffline(page);
}

__rust_helper void rust_helper___ClearPageOffline(struct page *page)
{
	__ClearPageOffline(page);
}

__rust_helper bool rust_helper_page_ref_freeze(struct page *page, int count)
{
	return page_ref_freeze(page, count);
}

__rust_helper void rust_helper_page_ref_unfreeze(struct page *page, int count)
{
	page_ref_unfreeze(page, count);
}

__rust_helper bool rust_helper_is_zone_movable_page(const struct page *page)
{
	return is_zone_movable_page(page);
}

/* Free pages of all zones but ZONE_MOVABLE: where kernel allocations (e.g. memmap) come from. */
__rust_helper unsigned long rust_helper_nr_free_kernel_pages(void)
{
	unsigned long pages = 0;
	int nid, zid;

	for_each_online_node(nid)
		for (zid = 0; zid < ZONE_MOVABLE; zid++)
			pages += zone_page_state(&NODE_DATA(nid)->node_zones[zid], NR_FREE_PAGES);
	return pages;
}

#endif /* CONFIG_RUST_MEMORY_HOTPLUG_ABSTRACTIONS */
