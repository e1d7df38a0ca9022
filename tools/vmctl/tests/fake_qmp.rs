//! End-to-end tests: the `vmctl` binary against a fake QMP server on a unix
//! socket that answers like QEMU with virtio-mem-pci devices, and a guest
//! driver that plugs memory gradually and so makes the fake send
//! `MEMORY_DEVICE_SIZE_CHANGE` events.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vmctl::qmp::Client;
use vmctl::vmem;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// How often the fake guest plugs or unplugs another `State::step` bytes.
const TICK: Duration = Duration::from_millis(20);

/// How the fake server behaves.
#[derive(Clone, Copy, Default)]
struct Behaviour {
    /// Before every reply, send an unrelated event (vm0's size change to 0,
    /// long gone), a stale reply and one without an id, and split the reply
    /// itself across two writes.
    noisy: bool,
    /// Act like a long-lived serial connection: no greeting, capabilities
    /// already negotiated, and the tail of an old message pending.
    serial_like: bool,
    /// The guest never plugs anything by itself.
    stuck: bool,
    /// Never answer anything.
    silent: bool,
    /// Before the answer to a `qom-get` of a device's `size`, send a size
    /// change event for that device saying it reached its requested size:
    /// one left over from an earlier request, as on a shared serial port.
    stale_event_before_size: bool,
}

struct Device {
    size: u64,
    requested: u64,
    block_size: u64,
    node: u64,
    memaddr: u64,
    memdev: String,
}

struct State {
    devices: BTreeMap<String, Device>,
    backends: BTreeMap<String, u64>,
    /// Bytes the "guest" plugs or unplugs per tick.
    step: u64,
    /// Every command received, for assertions.
    log: Vec<Value>,
    /// Connections whose capabilities are negotiated: QEMU sends events to
    /// them. Everything is written to connections with the state locked,
    /// as QEMU sends answers and events under its big lock: an event for a
    /// change after a command ran comes after the command's answer.
    listeners: Vec<UnixStream>,
}

impl State {
    /// Sends `event` to every listening connection, forgetting closed ones.
    fn emit(&mut self, event: &Value) {
        let line = format!("{event}\r\n");
        self.listeners
            .retain_mut(|conn| conn.write_all(line.as_bytes()).is_ok());
    }

    /// Sets the size of device `id` and tells the listeners, as QEMU does.
    fn set_size(&mut self, id: &str, size: u64) {
        self.devices.get_mut(id).unwrap().size = size;
        self.emit(&size_change(id, size));
    }
}

/// QEMU's `MEMORY_DEVICE_SIZE_CHANGE` for device `id`.
fn size_change(id: &str, size: u64) -> Value {
    json!({
        "timestamp": {"seconds": 1700000000, "microseconds": 1},
        "event": "MEMORY_DEVICE_SIZE_CHANGE",
        "data": {"id": id, "size": size, "qom-path": format!("/machine/peripheral/{id}")}
    })
}

struct FakeQemu {
    dir: PathBuf,
    socket: PathBuf,
    state: Arc<Mutex<State>>,
}

impl FakeQemu {
    fn start(behaviour: Behaviour) -> FakeQemu {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vmctl-it-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("qmp.sock");
        let listener = UnixListener::bind(&socket).unwrap();

        let mut devices = BTreeMap::new();
        for (i, id) in ["vm0", "vm1"].into_iter().enumerate() {
            devices.insert(
                id.to_owned(),
                Device {
                    size: if i == 0 { 0 } else { GIB },
                    requested: if i == 0 { 0 } else { GIB },
                    block_size: 2 * MIB,
                    node: i as u64,
                    memaddr: (4 + 8 * i as u64) * GIB,
                    memdev: format!("/objects/vmem{i}"),
                },
            );
        }
        let backends = [("/objects/vmem0", 8 * GIB), ("/objects/vmem1", 8 * GIB)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let state = Arc::new(Mutex::new(State {
            devices,
            backends,
            step: 256 * MIB,
            log: Vec::new(),
            listeners: Vec::new(),
        }));

        // QEMU's QMP socket serves one client at a time.
        let shared = Arc::clone(&state);
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                serve(conn, behaviour, &shared);
            }
        });
        if !behaviour.stuck {
            let guest = Arc::downgrade(&state);
            thread::spawn(move || run_guest(&guest));
        }
        FakeQemu { dir, socket, state }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmctl"));
        cmd.arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_remove("VMCTL_SOCKET");
        cmd
    }

    /// Runs the vmctl binary against this server.
    fn vmctl(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Starts the vmctl binary against this server, for a test to act
    /// while it runs.
    fn spawn_vmctl(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn commands(&self) -> Vec<Value> {
        self.state.lock().unwrap().log.clone()
    }

    /// How many times the `size` of device `id` was read.
    fn size_reads(&self, id: &str) -> usize {
        let path = format!("/machine/peripheral/{id}");
        self.commands()
            .iter()
            .filter(|c| {
                c["execute"] == "qom-get"
                    && c["arguments"]["path"] == path.as_str()
                    && c["arguments"]["property"] == "size"
            })
            .count()
    }

    /// Waits until the `size` of device `id` has been read `n` times: the
    /// answer to the last one is sent by then.
    fn await_size_reads(&self, id: &str, n: usize) {
        let start = Instant::now();
        while self.size_reads(id) < n {
            assert!(start.elapsed() < Duration::from_secs(10), "no size read");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The guest plugged or unplugged memory: `id` now has `size` bytes.
    fn set_size(&self, id: &str, size: u64) {
        self.state.lock().unwrap().set_size(id, size);
    }

    /// Sends an event to every listening connection.
    fn emit(&self, event: &Value) {
        self.state.lock().unwrap().emit(event);
    }
}

impl Drop for FakeQemu {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The guest driver: every tick, each device gets a step closer to its
/// requested size. Ends with the fake QEMU.
fn run_guest(state: &Weak<Mutex<State>>) {
    while let Some(state) = state.upgrade() {
        {
            let mut st = state.lock().unwrap();
            let step = st.step;
            let moves: Vec<(String, u64)> = st
                .devices
                .iter()
                .filter(|(_, dev)| dev.size != dev.requested)
                .map(|(id, dev)| {
                    let size = if dev.size < dev.requested {
                        (dev.size + step).min(dev.requested)
                    } else {
                        dev.size.saturating_sub(step).max(dev.requested)
                    };
                    (id.clone(), size)
                })
                .collect();
            for (id, size) in moves {
                st.set_size(&id, size);
            }
        }
        drop(state);
        thread::sleep(TICK);
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[track_caller]
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "vmctl failed: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Whether `child` is still running after `wait`.
fn still_running(child: &mut Child, wait: Duration) -> bool {
    thread::sleep(wait);
    child.try_wait().unwrap().is_none()
}

/// Serves one client connection until it closes.
fn serve(mut conn: UnixStream, behaviour: Behaviour, state: &Mutex<State>) {
    let mut negotiated = behaviour.serial_like;
    {
        let mut st = state.lock().unwrap();
        if behaviour.serial_like {
            // The end of a message whose start an earlier client read.
            conn.write_all(b"5}, \"id\": \"vmctl-1-7\"}\r\n").unwrap();
            st.listeners.push(conn.try_clone().unwrap());
        } else {
            conn.write_all(
                b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 0, \"major\": 10}, \
                  \"package\": \"fake\"}, \"capabilities\": [\"oob\"]}}\r\n",
            )
            .unwrap();
        }
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            // QEMU's lexer drops control characters (used to resync it).
            buf.retain(|&b| b >= 0x20 || b"\r\n\t".contains(&b));
            let start = buf.iter().position(|b| !b.is_ascii_whitespace());
            let Some(start) = start else {
                buf.clear();
                break;
            };
            buf.drain(..start);
            let mut values = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
            let cmd = match values.next() {
                Some(Ok(cmd)) => cmd,
                Some(Err(e)) if e.is_eof() => break,
                other => panic!("client sent bad JSON: {other:?}"),
            };
            let used = values.byte_offset();
            buf.drain(..used);
            if behaviour.silent {
                continue;
            }
            let mut st = state.lock().unwrap();
            let was_negotiated = negotiated;
            let reply = answer(&cmd, &mut negotiated, &mut st);
            let mut text = String::new();
            if behaviour.noisy {
                text.push_str(&format!("{}\r\n", size_change("vm0", 0)));
                text.push_str("{\"return\": 0, \"id\": \"vmctl-1-1\"}\r\n");
                text.push_str("{\"return\": 0}\r\n");
            }
            if behaviour.stale_event_before_size
                && cmd["execute"] == "qom-get"
                && cmd["arguments"]["property"] == "size"
            {
                let path = cmd["arguments"]["path"].as_str().unwrap_or("");
                if let Some((id, dev)) = path
                    .strip_prefix("/machine/peripheral/")
                    .and_then(|id| st.devices.get_key_value(id))
                {
                    text.push_str(&format!("{}\r\n", size_change(id, dev.requested)));
                }
            }
            text.push_str(&reply.to_string());
            text.push_str("\r\n");
            let bytes = text.as_bytes();
            let split = if behaviour.noisy {
                bytes.len() - 5
            } else {
                bytes.len()
            };
            conn.write_all(&bytes[..split]).unwrap();
            conn.flush().unwrap();
            if split < bytes.len() {
                thread::sleep(Duration::from_millis(5));
                conn.write_all(&bytes[split..]).unwrap();
            }
            if negotiated && !was_negotiated {
                st.listeners.push(conn.try_clone().unwrap());
            }
        }
    }
}

fn error(class: &str, desc: String) -> Result<Value, (String, String)> {
    Err((class.to_owned(), desc))
}

/// Builds QEMU's reply to `cmd`.
fn answer(cmd: &Value, negotiated: &mut bool, st: &mut State) -> Value {
    st.log.push(cmd.clone());
    let name = cmd.get("execute").and_then(Value::as_str).unwrap_or("");
    let args = cmd.get("arguments").cloned().unwrap_or(json!({}));
    let arg = |k: &str| args.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let result = if name == "qmp_capabilities" {
        if *negotiated {
            error(
                "CommandNotFound",
                "Capabilities negotiation is already complete, command ignored".into(),
            )
        } else {
            *negotiated = true;
            Ok(json!({}))
        }
    } else if !*negotiated {
        error(
            "CommandNotFound",
            "Expecting capabilities negotiation with 'qmp_capabilities'".into(),
        )
    } else {
        match name {
            "qom-list" if arg("path") == "/machine/peripheral" => {
                let mut children = vec![
                    child("type", "string"),
                    child("net0", "child<virtio-net-pci>"),
                ];
                for id in st.devices.keys() {
                    children.push(child(id, "child<virtio-mem-pci>"));
                }
                Ok(Value::Array(children))
            }
            "qom-get" => qom_get(st, &arg("path"), &arg("property")),
            "qom-set" => {
                let value = args.get("value").and_then(Value::as_u64);
                qom_set(st, &arg("path"), &arg("property"), value)
            }
            _ => error(
                "CommandNotFound",
                format!("The command {name} has not been found"),
            ),
        }
    };
    let mut reply = match result {
        Ok(v) => json!({ "return": v }),
        Err((class, desc)) => json!({"error": {"class": class, "desc": desc}}),
    };
    if let Some(id) = cmd.get("id") {
        reply["id"] = id.clone();
    }
    reply
}

fn child(name: &str, ty: &str) -> Value {
    json!({"name": name, "type": ty})
}

fn qom_get(st: &State, path: &str, prop: &str) -> Result<Value, (String, String)> {
    if let Some(&size) = st.backends.get(path) {
        return match prop {
            "size" => Ok(Value::from(size)),
            _ => error("GenericError", format!("Property '{prop}' not found")),
        };
    }
    let Some(dev) = path
        .strip_prefix("/machine/peripheral/")
        .and_then(|id| st.devices.get(id))
    else {
        return error("DeviceNotFound", format!("Device '{path}' not found"));
    };
    Ok(match prop {
        "size" => Value::from(dev.size),
        "requested-size" => Value::from(dev.requested),
        "block-size" => Value::from(dev.block_size),
        "node" => Value::from(dev.node),
        "memaddr" => Value::from(dev.memaddr),
        "memdev" => Value::from(dev.memdev.as_str()),
        _ => return error("GenericError", format!("Property '{prop}' not found")),
    })
}

fn qom_set(
    st: &mut State,
    path: &str,
    prop: &str,
    value: Option<u64>,
) -> Result<Value, (String, String)> {
    let Some(id) = path.strip_prefix("/machine/peripheral/") else {
        return error("DeviceNotFound", format!("Device '{path}' not found"));
    };
    let Some(dev) = st.devices.get(id) else {
        return error("DeviceNotFound", format!("Device '{path}' not found"));
    };
    if prop != "requested-size" {
        return error("GenericError", format!("Property '{prop}' not found"));
    }
    let Some(value) = value else {
        return error("GenericError", "Parameter 'value' expects uint64".into());
    };
    let region = st.backends[&dev.memdev];
    if value % dev.block_size != 0 {
        return error(
            "GenericError",
            format!(
                "'requested-size' has to be multiples of 'block-size' (0x{:x})",
                dev.block_size
            ),
        );
    }
    if value > region {
        return error(
            "GenericError",
            format!("'requested-size' cannot exceed the memory backend size(0x{region:x})"),
        );
    }
    st.devices.get_mut(id).unwrap().requested = value;
    Ok(json!({}))
}

#[test]
fn list_info_and_get() {
    let qemu = FakeQemu::start(Behaviour::default());
    assert_eq!(
        ok(qemu.vmctl(&["list"])),
        "vm0 size=0 requested-size=0 block-size=2097152 node=0 memaddr=4294967296\n\
         vm1 size=1073741824 requested-size=1073741824 block-size=2097152 node=1 \
         memaddr=12884901888\n"
    );
    assert_eq!(
        ok(qemu.vmctl(&["info", "vm1"])),
        "id=vm1\nsize=1073741824\nrequested-size=1073741824\nblock-size=2097152\nnode=1\n\
         memaddr=12884901888\nregion-size=8589934592\nmemdev=/objects/vmem1\n"
    );
    assert_eq!(ok(qemu.vmctl(&["get", "vm0", "block-size"])), "2097152\n");
    assert_eq!(
        ok(qemu.vmctl(&["get", "vm0", "memdev"])),
        "/objects/vmem0\n"
    );
    assert_eq!(
        ok(qemu.vmctl(&["get", "/objects/vmem0", "size"])),
        "8589934592\n"
    );

    let missing = qemu.vmctl(&["info", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("Device '/machine/peripheral/nope' not found"),
        "{}",
        stderr(&missing)
    );

    // Every command carried a string id, all distinct.
    let commands = qemu.commands();
    let mut ids: Vec<String> = commands
        .iter()
        .map(|c| c.get("id").and_then(Value::as_str).unwrap().to_owned())
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n);
}

fn set_size_then_wait(behaviour: Behaviour) {
    let qemu = FakeQemu::start(behaviour);
    let target = 4 * GIB + 130 * MIB;
    assert_eq!(
        ok(qemu.vmctl(&["set-size", "vm0", "4G+130M"])),
        format!("{target}\n")
    );
    assert_eq!(
        ok(qemu.vmctl(&["get", "vm0", "requested-size"])),
        format!("{target}\n")
    );
    let reads = qemu.size_reads("vm0");
    assert_eq!(
        ok(qemu.vmctl(&["wait", "vm0", "4226M", "--wait-timeout-s", "20"])),
        format!("{target}\n")
    );
    // The guest plugs 256 MiB a tick; wait read the size once and followed
    // the events from there, polling nothing.
    assert_eq!(qemu.size_reads("vm0"), reads + 1);
    assert_eq!(
        ok(qemu.vmctl(&["get", "vm0", "size"])),
        format!("{target}\n")
    );

    // Shrinking, in one go.
    assert_eq!(ok(qemu.vmctl(&["resize", "vm1", "0"])), "0\n");
    assert_eq!(
        ok(qemu.vmctl(&["info", "vm1"])).lines().nth(1),
        Some("size=0")
    );
}

#[test]
fn set_size_then_wait_clean_server() {
    set_size_then_wait(Behaviour::default());
}

#[test]
fn set_size_then_wait_with_events_and_stale_replies() {
    set_size_then_wait(Behaviour {
        noisy: true,
        ..Behaviour::default()
    });
}

#[test]
fn set_size_then_wait_on_a_serial_like_stream() {
    set_size_then_wait(Behaviour {
        noisy: true,
        serial_like: true,
        ..Behaviour::default()
    });
}

#[test]
fn wait_times_out_with_last_size() {
    let qemu = FakeQemu::start(Behaviour {
        stuck: true,
        ..Behaviour::default()
    });
    ok(qemu.vmctl(&["set-size", "vm0", "2G"]));
    let start = Instant::now();
    let out = qemu.vmctl(&["resize", "vm0", "2G", "--wait-timeout-s", "0.4"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(start.elapsed() >= Duration::from_millis(400));
    let err = stderr(&out);
    assert!(err.contains("timed out"), "{err}");
    assert!(err.contains("2147483648"), "{err}");
    assert!(err.contains("last size seen: 0"), "{err}");
    assert!(stdout(&out).is_empty());

    // The last size seen is the one of the last event, and the scripts'
    // `2>&1 | tail -n1` gets the error, not a size.
    let start = Instant::now();
    let child = qemu.spawn_vmctl(&["wait", "vm0", "2G", "--wait-timeout-s", "1"]);
    qemu.await_size_reads("vm0", qemu.size_reads("vm0") + 1);
    qemu.set_size("vm0", GIB);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(start.elapsed() >= Duration::from_secs(1));
    let err = stderr(&out);
    assert!(err.contains("last size seen: 1073741824"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(stdout(&out).is_empty());
}

#[test]
fn wait_follows_the_events_of_its_device_only() {
    let qemu = FakeQemu::start(Behaviour {
        stuck: true,
        ..Behaviour::default()
    });
    ok(qemu.vmctl(&["set-size", "vm0", "2G"]));
    let reads = qemu.size_reads("vm0");
    let mut child = qemu.spawn_vmctl(&["wait", "vm0", "2G", "--wait-timeout-s", "20"]);
    qemu.await_size_reads("vm0", reads + 1);

    // The size it waits for, but of another device: by id and path, by
    // path alone (a device without an id), by id alone (before QEMU 6.2).
    qemu.emit(&size_change("vm1", 2 * GIB));
    qemu.emit(&json!({"event": "MEMORY_DEVICE_SIZE_CHANGE",
        "data": {"size": 2 * GIB, "qom-path": "/machine/unattached/device[3]"}}));
    qemu.emit(
        &json!({"event": "MEMORY_DEVICE_SIZE_CHANGE", "data": {"id": "vm2", "size": 2 * GIB}}),
    );
    // Other events, then part of the way.
    qemu.emit(&json!({"event": "BALLOON_CHANGE", "data": {"actual": 2 * GIB}}));
    qemu.set_size("vm0", GIB);
    assert!(still_running(&mut child, Duration::from_millis(300)));

    qemu.set_size("vm0", 2 * GIB);
    let out = child.wait_with_output().unwrap();
    assert_eq!(ok(out), format!("{}\n", 2 * GIB));
    assert_eq!(qemu.size_reads("vm0"), reads + 1, "wait must not poll");
}

#[test]
fn wait_ignores_a_stale_event_before_the_answer() {
    // Before the answer to the size read, an event says vm0 has its
    // requested 2G: an old one, as the answer (0) is newer.
    let qemu = FakeQemu::start(Behaviour {
        stuck: true,
        stale_event_before_size: true,
        ..Behaviour::default()
    });
    ok(qemu.vmctl(&["set-size", "vm0", "2G"]));
    let out = qemu.vmctl(&["wait", "vm0", "2G", "--wait-timeout-s", "0.5"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("last size seen: 0"), "{err}");

    // An event after the answer counts.
    let reads = qemu.size_reads("vm0");
    let mut child = qemu.spawn_vmctl(&["wait", "vm0", "2G", "--wait-timeout-s", "20"]);
    qemu.await_size_reads("vm0", reads + 1);
    assert!(still_running(&mut child, Duration::from_millis(200)));
    qemu.set_size("vm0", 2 * GIB);
    assert_eq!(
        ok(child.wait_with_output().unwrap()),
        format!("{}\n", 2 * GIB)
    );
}

#[test]
fn wait_with_poll_ms_reads_the_size_until_it_is_there() {
    let qemu = FakeQemu::start(Behaviour {
        stuck: true,
        ..Behaviour::default()
    });
    ok(qemu.vmctl(&["set-size", "vm0", "2G"]));
    let reads = qemu.size_reads("vm0");
    let mut child = qemu.spawn_vmctl(&[
        "wait",
        "vm0",
        "2G",
        "--poll-ms",
        "20",
        "--wait-timeout-s",
        "20",
    ]);
    // It reads again and again while nothing changes.
    qemu.await_size_reads("vm0", reads + 3);
    assert!(still_running(&mut child, Duration::from_millis(100)));
    qemu.set_size("vm0", 2 * GIB);
    assert_eq!(
        ok(child.wait_with_output().unwrap()),
        format!("{}\n", 2 * GIB)
    );

    // And times out with the last size it read.
    let out = qemu.vmctl(&[
        "wait",
        "vm0",
        "3G",
        "--poll-ms",
        "20",
        "--wait-timeout-s",
        "0.2",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("last size seen: 2147483648"));
}

#[test]
fn wait_returns_at_once_when_the_size_is_there() {
    let qemu = FakeQemu::start(Behaviour {
        stuck: true,
        ..Behaviour::default()
    });
    let start = Instant::now();
    assert_eq!(
        ok(qemu.vmctl(&["wait", "vm1", "1G", "--wait-timeout-s", "0"])),
        "1073741824\n"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    let out = qemu.vmctl(&["wait", "vm1", "2G", "--wait-timeout-s", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("last size seen: 1073741824"));
}

#[test]
fn qemu_errors_are_reported() {
    let qemu = FakeQemu::start(Behaviour::default());
    let out = qemu.vmctl(&["set-size", "vm0", "3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("multiples of 'block-size'"),
        "{}",
        stderr(&out)
    );
    let out = qemu.vmctl(&["set-size", "vm0", "9G"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot exceed"), "{}", stderr(&out));

    // raw prints the whole reply, error or not.
    let out = qemu.vmctl(&["raw", r#"{"execute":"no-such-command","id":"x"}"#]);
    assert_eq!(out.status.code(), Some(1));
    let reply: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        reply
            .get("error")
            .and_then(|e| e.get("class"))
            .and_then(Value::as_str),
        Some("CommandNotFound")
    );
    let out = ok(qemu.vmctl(&[
        "raw",
        r#"{"execute":"qom-get","arguments":{"path":"/machine/peripheral/vm0","property":"node"}}"#,
    ]));
    let reply: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reply.get("return"), Some(&json!(0)));
}

#[test]
fn silent_peer_times_out() {
    let qemu = FakeQemu::start(Behaviour {
        silent: true,
        ..Behaviour::default()
    });
    let start = Instant::now();
    let out = qemu.vmctl(&["--timeout-ms", "300", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(stderr(&out).contains("no reply"), "{}", stderr(&out));
}

#[test]
fn socket_from_environment_and_usage_errors() {
    let qemu = FakeQemu::start(Behaviour::default());
    let out = Command::new(env!("CARGO_BIN_EXE_vmctl"))
        .args(["get", "vm1", "node"])
        .env("VMCTL_SOCKET", &qemu.socket)
        .output()
        .unwrap();
    assert_eq!(ok(out), "1\n");

    let before = qemu.commands().len();
    let out = qemu.vmctl(&["set-size", "vm0", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        qemu.commands().len(),
        before,
        "nothing must be sent on a usage error"
    );

    // Usage errors go to stderr with status 2; help to stdout with 0.
    let out = qemu.vmctl(&["resize", "vm0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).is_empty());
    assert!(stderr(&out).contains("<SIZE>"), "{}", stderr(&out));
    let out = Command::new(env!("CARGO_BIN_EXE_vmctl"))
        .arg("--help")
        .output()
        .unwrap();
    let help = ok(out);
    assert!(help.contains("Usage: vmctl [OPTIONS] <COMMAND>"), "{help}");
    assert!(help.contains("  resize "), "{help}");
    let out = Command::new(env!("CARGO_BIN_EXE_vmctl"))
        .args(["help", "resize"])
        .output()
        .unwrap();
    assert!(ok(out).contains("Usage: vmctl resize [OPTIONS] <ID> <SIZE>"));
}

#[test]
fn library_api_over_a_socket() {
    let qemu = FakeQemu::start(Behaviour {
        noisy: true,
        ..Behaviour::default()
    });
    let stream = UnixStream::connect(Path::new(&qemu.socket)).unwrap();
    let mut client = Client::new(stream, Duration::from_secs(5));
    client.negotiate().unwrap();
    // A second negotiation is answered with an error, which is tolerated.
    client.negotiate().unwrap();
    assert_eq!(vmem::list_devices(&mut client).unwrap(), ["vm0", "vm1"]);
    vmem::set_requested_size(&mut client, "vm0", 2 * GIB).unwrap();
    let size = vmem::wait_for_size(&mut client, "vm0", 2 * GIB, Duration::from_secs(10)).unwrap();
    assert_eq!(size, 2 * GIB);
    let info = vmem::DeviceInfo::fetch(&mut client, "vm0").unwrap();
    assert_eq!(info.requested_size, 2 * GIB);
    assert_eq!(info.region_size, 8 * GIB);
}

#[test]
fn record_prints_the_sizes_and_requests_what_it_reads() {
    use std::io::{BufRead, BufReader};
    let qemu = FakeQemu::start(Behaviour::default());
    let mut child = qemu
        .command(&["record", "vm0", "--interval-ms", "20", "--meminfo"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || -> Vec<u64> {
        let line = lines.next().unwrap().unwrap();
        line.split(' ').map(|f| f.parse().unwrap()).collect()
    };
    // T_MS REQUESTED SIZE MEMTOTAL, from the start.
    let first = next();
    assert_eq!(first.len(), 4);
    assert_eq!(&first[1..3], &[0, 0]);
    assert!(first[3] > 0);
    // A size on standard input is requested; the guest plugs it over a few ticks.
    writeln!(stdin, "1G+512M").unwrap();
    let mut last = first;
    let mut seen_between = false;
    while last[2] != 3 * GIB / 2 {
        let line = next();
        assert!(line[0] >= last[0]);
        if line[1] == 3 * GIB / 2 && line[2] > 0 && line[2] < 3 * GIB / 2 {
            seen_between = true;
        }
        last = line;
    }
    assert!(seen_between, "no line while the guest was plugging");
    // A line that is not a size ends it with a message.
    writeln!(stdin, "lots").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("lots"), "{}", stderr(&out));
    assert_eq!(
        qemu.state.lock().unwrap().devices["vm0"].requested,
        3 * GIB / 2
    );

    // The end of the input ends it (at the tick after the reader sees it).
    let mut child = qemu
        .command(&["record", "vm0", "--interval-ms", "20"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdin.take());
    let out = ok(child.wait_with_output().unwrap());
    for line in out.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 3, "{out}");
        assert_eq!(
            fields[1..],
            [format!("{}", 3 * GIB / 2), format!("{}", 3 * GIB / 2)]
        );
    }
    assert!(!out.is_empty());
}
