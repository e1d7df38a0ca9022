// SPDX-License-Identifier: GPL-2.0

#include <linux/virtio.h>
#include <linux/virtio_config.h>

#ifdef CONFIG_RUST_VIRTIO_ABSTRACTIONS

__rust_helper bool rust_helper_virtio_has_feature(const struct virtio_device *vdev,
						  unsigned int fbit)
{
	return virtio_has_feature(vdev, fbit);
}

/*
 * Reads one little-endian config field of `len` bytes (1, 2, 4 or 8) at
 * `offset` as a consistent snapshot: retried until the device's config
 * generation is stable across the read (as virtio_cread_le() does).
 */
__rust_helper void rust_helper_virtio_cread_le(struct virtio_device *vdev,
					       unsigned int offset, void *buf,
					       size_t len)
{
	might_sleep();
	__virtio_cread_many(vdev, offset, buf, 1, len);
}

__rust_helper void rust_helper_virtio_device_ready(struct virtio_device *vdev)
{
	virtio_device_ready(vdev);
}

__rust_helper u8 rust_helper_virtio_get_status(struct virtio_device *vdev)
{
	return vdev->config->get_status(vdev);
}

__rust_helper struct virtqueue *
rust_helper_virtio_find_single_vq(struct virtio_device *vdev,
				  vq_callback_t *c, const char *n)
{
	return virtio_find_single_vq(vdev, c, n);
}

__rust_helper void rust_helper_virtio_del_vqs(struct virtio_device *vdev)
{
	vdev->config->del_vqs(vdev);
}

#endif /* CONFIG_RUST_VIRTIO_ABSTRACTIONS */
