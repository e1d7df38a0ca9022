// SPDX-License-Identifier: GPL-2.0

#include <linux/device.h>
#include <linux/sysfs.h>

/*
 * Sets up a dynamically allocated, read-only device attribute (sysfs_attr_init() is a macro;
 * `show` sits in a union that bindgen cannot name stably).
 */
__rust_helper void
rust_helper_sysfs_init_device_attr(struct device_attribute *attr, const char *name,
				   ssize_t (*show)(struct device *dev,
						   struct device_attribute *attr, char *buf))
{
	sysfs_attr_init(&attr->attr);
	attr->attr.name = name;
	attr->attr.mode = 0444;
	attr->show = show;
}

/* Sets the name and the attributes of a group (`attrs` sits in a union, like `show`). */
__rust_helper void rust_helper_sysfs_init_group(struct attribute_group *group, const char *name,
						struct attribute **attrs)
{
	group->name = name;
	group->attrs = attrs;
}
