// SPDX-License-Identifier: GPL-2.0

#include <linux/mmzone.h>
#include <linux/pageblock-flags.h>

#ifdef CONFIG_RUST_MEMORY_HOTPLUG_ABSTRACTIONS

__rust_helper unsigned long rust_helper_pageblock_nr_pages(void)
{
	return pageblock_nr_pages;
}

#endif /* CONFIG_RUST_MEMORY_HOTPLUG_ABSTRACTIONS */
