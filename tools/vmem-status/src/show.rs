//! `show`: a device's attributes for people or for scripts.

use std::io::{self, Write};

use crate::size::format_bytes;
use crate::sysfs::{parse_seconds_ms, Snapshot};

/// How `show` prints (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A block per device, sizes in bytes and binary units.
    #[value(
        help = "(default) a block per device: mode, block sizes, node, region, \
                    requested/plugged/online/added sizes (in bytes and binary units), \
                    activity, reason, and when the next retry runs (with the delay \
                    until then, from DIR/../proc/uptime)"
    )]
    Human,
    /// `device.attribute=value` lines; `stats` lines become `device.stats.name=value`.
    #[value(
        help = "DEV.ATTRIBUTE=VALUE lines, one per attribute file; the lines of \
                    stats become DEV.stats.NAME=VALUE"
    )]
    Kv,
}

/// Writes `device.attribute=value` lines, one per attribute and one per `stats` line.
pub fn write_kv(out: &mut dyn Write, device: &str, snap: &Snapshot) -> io::Result<()> {
    for (name, value) in &snap.attrs {
        if name == "stats" {
            for line in value.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let (key, value) = line
                    .split_once(char::is_whitespace)
                    .map_or((line, ""), |(k, v)| (k, v.trim()));
                writeln!(out, "{device}.stats.{key}={value}")?;
            }
        } else {
            // Keep one line per key even if a value had several.
            let value = value.trim().replace('\n', " ");
            writeln!(out, "{device}.{name}={value}")?;
        }
    }
    Ok(())
}

/// Writes a block describing the device. `uptime_ms` (seconds since boot, as
/// `/proc/uptime`) turns `retry_at` into a delay.
pub fn write_human(
    out: &mut dyn Write,
    device: &str,
    snap: &Snapshot,
    uptime_ms: Option<u64>,
) -> io::Result<()> {
    let raw = |name| snap.get(name).map_or("?", str::trim);
    let size = |name| {
        let value = raw(name);
        value
            .parse()
            .map_or_else(|_| value.to_owned(), format_bytes)
    };
    let memmap = match raw("memmap_on_memory") {
        "0" => "no".to_owned(),
        "1" => "yes".to_owned(),
        other => other.to_owned(),
    };
    let region = format!(
        "{}, {}, usable {}",
        raw("region_start"),
        size("region_size"),
        size("usable_region_size")
    );
    let lines = [
        ("mode", raw("mode").to_owned()),
        ("block size", size("block_size")),
        ("device block size", size("device_block_size")),
        ("memory block size", size("memory_block_size")),
        ("memmap on memory", memmap),
        ("node", raw("node").to_owned()),
        ("region", region),
        ("requested", size("requested_size")),
        ("plugged", size("plugged_size")),
        ("online", size("online_size")),
        ("added", size("added_size")),
        ("activity", raw("activity").to_owned()),
        ("reason", raw("reason").to_owned()),
        ("retry at", retry_at(raw("retry_at"), uptime_ms)),
    ];
    writeln!(out, "{device}:")?;
    for (label, value) in lines {
        writeln!(out, "  {:<19}{value}", format!("{label}:"))?;
    }
    Ok(())
}

/// `retry_at` with the delay until then: `1234.567 s since boot (in 3.2 s)`.
fn retry_at(value: &str, uptime_ms: Option<u64>) -> String {
    let Some(at) = parse_seconds_ms(value) else {
        return value.to_owned();
    };
    let Some(now) = uptime_ms else {
        return format!("{value} s since boot");
    };
    if at > now {
        // Tenths of a second, rounded.
        let tenths = (at - now + 50) / 100;
        format!(
            "{value} s since boot (in {}.{} s)",
            tenths / 10,
            tenths % 10
        )
    } else {
        format!("{value} s since boot (due)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs::Sysfs;
    use crate::testutil::FakeTree;

    fn snapshot(tree: &FakeTree, dev: &str) -> Snapshot {
        Sysfs::new(tree.sysfs())
            .device(dev)
            .unwrap()
            .snapshot()
            .unwrap()
    }

    #[test]
    fn kv_has_every_attribute_and_stats_line() {
        let tree = FakeTree::new("kv");
        tree.add_device(
            "virtio0",
            &[
                ("activity", "stalled\n"),
                ("reason", "free memory below the safety margin\n"),
                ("retry_at", "1234.567\n"),
            ],
        );
        let mut out = Vec::new();
        write_kv(&mut out, "virtio0", &snapshot(&tree, "virtio0")).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "virtio0.requested_size=4294967296\n\
             virtio0.plugged_size=4294967296\n\
             virtio0.online_size=4294967296\n\
             virtio0.added_size=4294967296\n\
             virtio0.activity=stalled\n\
             virtio0.reason=free memory below the safety margin\n\
             virtio0.retry_at=1234.567\n\
             virtio0.mode=sub-block\n\
             virtio0.block_size=2097152\n\
             virtio0.device_block_size=2097152\n\
             virtio0.memory_block_size=134217728\n\
             virtio0.memmap_on_memory=0\n\
             virtio0.node=0\n\
             virtio0.region_start=0x140000000\n\
             virtio0.region_size=17179869184\n\
             virtio0.usable_region_size=17179869184\n\
             virtio0.stats.plug_ack=12\n\
             virtio0.stats.plug_nack=0\n"
        );
    }

    #[test]
    fn human_shows_sizes_in_bytes_and_units() {
        let tree = FakeTree::new("human");
        tree.add_device(
            "virtio0",
            &[
                ("requested_size", "4571791360\n"),
                ("plugged_size", "4294967296\n"),
                ("activity", "waiting\n"),
                ("reason", "device busy\n"),
                ("retry_at", "105.000\n"),
            ],
        );
        let mut out = Vec::new();
        write_human(
            &mut out,
            "virtio0",
            &snapshot(&tree, "virtio0"),
            Some(100_250),
        )
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.starts_with("virtio0:\n  mode:              sub-block\n"),
            "{out}"
        );
        for line in [
            "  block size:        2097152 (2 MiB)\n",
            "  memory block size: 134217728 (128 MiB)\n",
            "  memmap on memory:  no\n",
            "  node:              0\n",
            "  region:            0x140000000, 17179869184 (16 GiB), usable 17179869184 (16 GiB)\n",
            "  requested:         4571791360 (4.26 GiB)\n",
            "  plugged:           4294967296 (4 GiB)\n",
            "  activity:          waiting\n",
            "  reason:            device busy\n",
            "  retry at:          105.000 s since boot (in 4.8 s)\n",
        ] {
            assert!(out.contains(line), "missing {line:?} in\n{out}");
        }
    }

    #[test]
    fn human_tolerates_missing_and_odd_values() {
        let tree = FakeTree::new("humanodd");
        tree.add_device("virtio0", &[("retry_at", "50.5\n"), ("node", "\n")]);
        tree.remove("virtio0", "online_size");
        let snap = snapshot(&tree, "virtio0");
        let mut out = Vec::new();
        write_human(&mut out, "virtio0", &snap, Some(60_000)).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("  online:            ?\n"), "{out}");
        assert!(
            out.contains("  retry at:          50.5 s since boot (due)\n"),
            "{out}"
        );

        let mut out = Vec::new();
        write_human(&mut out, "virtio0", &snap, None).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("  retry at:          50.5 s since boot\n"),
            "{out}"
        );
    }
}
