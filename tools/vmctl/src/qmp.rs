//! A minimal QMP (QEMU Machine Protocol) client.
//!
//! The client is written to survive a *shared, long-lived* byte stream such
//! as a virtio-serial port whose host end connected to QEMU's QMP server once,
//! at QEMU start. On such a stream:
//!
//! * the server greeting (`{"QMP": ...}`) may have been sent long ago, may
//!   still be buffered, or may have been read by an earlier client;
//! * capabilities may already be negotiated, so `qmp_capabilities` can fail
//!   with "Capabilities negotiation is already complete";
//! * leftovers of earlier sessions can be anywhere: the tail of a half-read
//!   message, replies to commands whose client gave up, events;
//! * the server's JSON parser may hold a half-written command from a client
//!   that was killed mid-write.
//!
//! So every command carries an `id` unique to this process and invocation,
//! and [`Client::execute`] skips everything that is not the reply with that
//! id. Unparsable bytes are dropped up to the next line break (QEMU ends each
//! message with CRLF). Reads are bounded by a timeout so a dead peer gives
//! an error rather than a hang.

use std::fmt;
use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::json::{self, ErrorKind, Value};
use crate::transport::Transport;

/// Default bound on the wait for one reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes sent by [`Client::resync`]: an ASCII control character other than
/// TAB, CR and LF is a lexical error for QEMU's JSON parser, which makes it
/// drop whatever partial input it holds and start afresh (see "Forcing the
/// JSON parser into known-good state" in QEMU's QMP specification). QEMU
/// answers with an error that carries no id, which the client ignores.
const RESYNC_BYTES: &[u8] = b"\x1b\r\n";

/// Refuse to buffer more than this much without finding a message.
const MAX_BUFFER: usize = 64 << 20;

/// What can go wrong talking QMP.
#[derive(Debug)]
pub enum Error {
    /// The stream failed.
    Io(io::Error),
    /// No matching reply arrived in time.
    Timeout {
        /// The command that was waiting.
        command: String,
        /// How long it waited.
        waited: Duration,
    },
    /// The peer closed the stream.
    Closed,
    /// QEMU answered the command with an error.
    Qmp {
        /// The error class, e.g. `GenericError`, `CommandNotFound`.
        class: String,
        /// QEMU's human-readable description.
        desc: String,
    },
    /// The peer sent something that is not QMP.
    Protocol(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "QMP I/O error: {e}"),
            Error::Timeout { command, waited } => write!(
                f,
                "no reply to QMP command {command:?} within {:.1} s (is QEMU alive and the QMP \
                 monitor connected?)",
                waited.as_secs_f64()
            ),
            Error::Closed => write!(f, "QMP peer closed the connection"),
            Error::Qmp { class, desc } => write!(f, "QEMU error ({class}): {desc}"),
            Error::Protocol(msg) => write!(f, "QMP protocol error: {msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

/// A QMP client over any [`Transport`].
pub struct Client<S: Transport> {
    stream: S,
    /// Bytes read but not yet consumed as messages.
    buf: Vec<u8>,
    /// Prefix of every command id: unique per process and start time.
    id_prefix: String,
    /// Sequence number of the next command.
    next_seq: u64,
    /// Bound on the wait for each reply.
    timeout: Duration,
}

impl<S: Transport> Client<S> {
    /// Wraps `stream`. Nothing is sent until the first command; call
    /// [`Client::negotiate`] before anything else.
    pub fn new(stream: S, timeout: Duration) -> Client<S> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Client {
            stream,
            buf: Vec::new(),
            id_prefix: format!("vmctl-{}-{nanos:x}", std::process::id()),
            next_seq: 1,
            timeout,
        }
    }

    /// Replaces the id prefix (ids are `PREFIX-N`); useful for tests.
    pub fn with_id_prefix(mut self, prefix: impl Into<String>) -> Client<S> {
        self.id_prefix = prefix.into();
        self
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Resets the server's JSON parser, in case an earlier client left a
    /// partial command in it. Only useful on shared streams (a serial port);
    /// a fresh socket connection starts clean.
    pub fn resync(&mut self) -> Result<(), Error> {
        self.stream.write_all(RESYNC_BYTES)?;
        self.stream.flush()?;
        Ok(())
    }

    /// Leaves capabilities negotiation mode. Succeeds also when an earlier
    /// client on the same stream already did it.
    pub fn negotiate(&mut self) -> Result<(), Error> {
        match self.execute("qmp_capabilities", None) {
            Ok(_) => Ok(()),
            Err(Error::Qmp { class, desc })
                if class == "CommandNotFound" || desc.contains("already complete") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Runs `command` with optional `arguments` and returns the `return`
    /// value of its reply, or [`Error::Qmp`] if QEMU answered with an error.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, Error> {
        let mut msg = Value::object([("execute", Value::from(command))]);
        if let Some(args) = arguments {
            msg.set("arguments", args);
        }
        let reply = self.execute_raw(msg)?;
        if let Some(err) = reply.get("error") {
            let field = |k| err.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
            return Err(Error::Qmp {
                class: field("class"),
                desc: field("desc"),
            });
        }
        reply
            .get("return")
            .cloned()
            .ok_or_else(|| Error::Protocol(format!("reply has neither return nor error: {reply}")))
    }

    /// Sends the command object `msg` (any `id` in it is replaced by a fresh
    /// one) and returns the whole matching reply object, error or not.
    pub fn execute_raw(&mut self, mut msg: Value) -> Result<Value, Error> {
        if !msg.is_object() {
            return Err(Error::Protocol(format!(
                "a QMP command must be a JSON object, not {msg}"
            )));
        }
        let command = msg
            .get("execute")
            .or_else(|| msg.get("exec-oob"))
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        let id = format!("{}-{}", self.id_prefix, self.next_seq);
        self.next_seq += 1;
        msg.set("id", Value::from(id.as_str()));

        let mut line = msg.to_string().into_bytes();
        line.extend_from_slice(b"\r\n");
        self.stream.write_all(&line)?;
        self.stream.flush()?;

        let start = Instant::now();
        let deadline = start + self.timeout;
        loop {
            let reply = self.read_message(deadline).map_err(|e| match e {
                Error::Timeout { .. } => Error::Timeout {
                    command: command.clone(),
                    waited: start.elapsed(),
                },
                e => e,
            })?;
            if is_reply_to(&reply, &id) {
                return Ok(reply);
            }
            // A greeting, an event, or a stale reply: not ours.
        }
    }

    /// Reads the next top-level JSON object from the stream, dropping
    /// anything unparsable and any non-object value.
    fn read_message(&mut self, deadline: Instant) -> Result<Value, Error> {
        loop {
            if let Some(v) = self.take_buffered_message() {
                return Ok(v);
            }
            if self.buf.len() > MAX_BUFFER {
                return Err(Error::Protocol(format!(
                    "more than {MAX_BUFFER} bytes without a complete message"
                )));
            }
            self.fill(deadline)?;
        }
    }

    /// Extracts one object from the buffer if a complete one is there,
    /// discarding garbage on the way.
    fn take_buffered_message(&mut self) -> Option<Value> {
        loop {
            let start = self
                .buf
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(self.buf.len());
            self.buf.drain(..start);
            if self.buf.is_empty() {
                return None;
            }
            match json::parse_prefix(&self.buf) {
                Ok((v, used)) => {
                    self.buf.drain(..used);
                    if v.is_object() {
                        return Some(v);
                    }
                }
                Err(e) if e.kind == ErrorKind::Incomplete => {
                    // Normally just the first part of a message. But if a line
                    // break followed by `{` appears, a new message started on
                    // a new line while the bytes before it never completed:
                    // the tail of a message whose head was read by someone
                    // else. (QEMU never breaks a message across lines except
                    // with pretty=on, where only the outermost `{` starts a
                    // line.)
                    let restart = self.buf.windows(2).position(|w| w == b"\n{")?;
                    self.buf.drain(..=restart);
                }
                Err(_) => {
                    // Garbage: drop through the end of the line, or all of it
                    // if the line has not ended yet (its end will be dropped
                    // when it arrives, as it cannot parse either).
                    let end = self
                        .buf
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(self.buf.len(), |i| i + 1);
                    self.buf.drain(..end);
                }
            }
        }
    }

    /// Reads more bytes into the buffer, waiting at most until `deadline`.
    fn fill(&mut self, deadline: Instant) -> Result<(), Error> {
        let mut chunk = [0u8; 8192];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    command: String::new(),
                    waited: Duration::ZERO,
                });
            }
            self.stream.set_read_timeout(deadline - now)?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(Error::Closed),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Whether `msg` is the reply (success or error) to the command with `id`.
/// Greetings (`"QMP"`) and events (`"event"`) never are.
pub fn is_reply_to(msg: &Value, id: &str) -> bool {
    msg.get("QMP").is_none()
        && msg.get("event").is_none()
        && (msg.get("return").is_some() || msg.get("error").is_some())
        && msg.get("id").and_then(Value::as_str) == Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::io::{Read, Write};

    /// An in-memory QMP peer: bytes written by the client are parsed into
    /// commands and handed to `respond`, whose output is queued for reading
    /// in chunks of at most `chunk` bytes (to exercise reassembly).
    struct Mock<F: FnMut(&Value) -> String> {
        respond: F,
        incoming: Vec<u8>,
        outgoing: VecDeque<u8>,
        chunk: usize,
        sent: Vec<Value>,
        raw_written: Vec<u8>,
    }

    impl<F: FnMut(&Value) -> String> Mock<F> {
        fn new(preloaded: &str, chunk: usize, respond: F) -> Mock<F> {
            Mock {
                respond,
                incoming: Vec::new(),
                outgoing: preloaded.bytes().collect(),
                chunk,
                sent: Vec::new(),
                raw_written: Vec::new(),
            }
        }
    }

    impl<F: FnMut(&Value) -> String> Read for Mock<F> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.outgoing.is_empty() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no data"));
            }
            let n = buf.len().min(self.chunk).min(self.outgoing.len());
            for (slot, b) in buf.iter_mut().zip(self.outgoing.drain(..n)) {
                *slot = b;
            }
            Ok(n)
        }
    }

    impl<F: FnMut(&Value) -> String> Write for Mock<F> {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.raw_written.extend_from_slice(data);
            self.incoming.extend_from_slice(data);
            // Drop resync bytes the way QEMU's lexer would.
            self.incoming.retain(|&b| b != 0x1b);
            while let Some(nl) = self.incoming.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.incoming.drain(..=nl).collect();
                let text = String::from_utf8(line).unwrap();
                if text.trim().is_empty() {
                    continue;
                }
                let cmd = json::parse(&text).unwrap();
                let out = (self.respond)(&cmd);
                self.outgoing.extend(out.bytes());
                self.sent.push(cmd);
            }
            Ok(data.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<F: FnMut(&Value) -> String> Transport for Mock<F> {
        fn set_read_timeout(&mut self, _: Duration) -> io::Result<()> {
            Ok(())
        }
    }

    fn id_of(cmd: &Value) -> String {
        cmd.get("id").unwrap().to_string()
    }

    const GREETING: &str =
        "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}}, \"capabilities\": [\"oob\"]}}\r\n";

    #[test]
    fn skips_greeting_events_and_stale_replies() {
        let mock = Mock::new(GREETING, 7, |cmd| {
            let id = id_of(cmd);
            match cmd.get("execute").and_then(Value::as_str) {
                Some("qmp_capabilities") => format!(
                    "{{\"event\": \"X\", \"data\": {{}}, \"timestamp\": {{\"seconds\": 1, \"microseconds\": 2}}}}\r\n\
                     {{\"return\": {{}}, \"id\": \"stale-1\"}}\r\n\
                     {{\"return\": {{}}, \"id\": {id}}}\r\n"
                ),
                Some("qom-get") => format!(
                    "{{\"return\": 1, \"id\": \"vmctl-1-2\"}}\r\n\
                     {{\"error\": {{\"class\": \"GenericError\", \"desc\": \"old\"}}, \"id\": 12}}\r\n\
                     {{\"error\": {{\"class\": \"GenericError\", \"desc\": \"JSON parse error\"}}}}\r\n\
                     {{\"event\": \"MEMORY_DEVICE_SIZE_CHANGE\", \"data\": {{\"size\": 5}}, \"id\": {id}}}\r\n\
                     {{\"return\": 18446744073709551615, \"id\": {id}}}\r\n"
                ),
                _ => panic!("unexpected command {cmd}"),
            }
        });
        let mut c = Client::new(mock, Duration::from_secs(1));
        c.negotiate().unwrap();
        let args = Value::object([
            ("path", Value::from("/p")),
            ("property", Value::from("size")),
        ]);
        assert_eq!(
            c.execute("qom-get", Some(args)).unwrap().as_u64(),
            Some(u64::MAX)
        );
        let sent = &c.get_mut().sent;
        assert_eq!(sent.len(), 2);
        assert_ne!(sent[0].get("id"), sent[1].get("id"), "ids must be unique");
    }

    #[test]
    fn tolerates_already_negotiated_and_leftover_garbage() {
        // The greeting was consumed long ago; the port holds the tail of a
        // half-read message, a stale reply, and a whole greeting later on.
        let leftovers = "ze\": 5}, \"id\": \"vmctl-9-1\"}\r\n\
                         {\"return\": [1, 2, \r\n\
                         {\"return\": {}, \"id\": \"vmctl-9-2\"}\r\n\
                         \"a bare string\"\r\n";
        let mock = Mock::new(leftovers, 5, |cmd| {
            let id = id_of(cmd);
            match cmd.get("execute").and_then(Value::as_str) {
                Some("qmp_capabilities") => format!(
                    "{{\"id\": {id}, \"error\": {{\"class\": \"CommandNotFound\", \"desc\": \
                     \"Capabilities negotiation is already complete, command ignored\"}}}}\r\n"
                ),
                Some("query-memory-devices") => format!("{{\"return\": [], \"id\": {id}}}\r\n"),
                _ => panic!("unexpected command {cmd}"),
            }
        });
        let mut c = Client::new(mock, Duration::from_secs(1)).with_id_prefix("t");
        c.resync().unwrap();
        c.negotiate().unwrap();
        assert_eq!(
            c.execute("query-memory-devices", None).unwrap(),
            Value::Array(vec![])
        );
        assert!(c.get_mut().raw_written.starts_with(RESYNC_BYTES));
        assert_eq!(c.get_mut().sent[1].get("id").unwrap().as_str(), Some("t-2"));
    }

    #[test]
    fn reports_qmp_errors() {
        let mock = Mock::new("", 64, |cmd| {
            format!(
                "{{\"error\": {{\"class\": \"GenericError\", \"desc\": \"Property 'x' not found\"}}, \"id\": {}}}\r\n",
                id_of(cmd)
            )
        });
        let mut c = Client::new(mock, Duration::from_secs(1));
        match c.execute("qom-get", None) {
            Err(Error::Qmp { class, desc }) => {
                assert_eq!(class, "GenericError");
                assert_eq!(desc, "Property 'x' not found");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn negotiate_propagates_other_errors() {
        let mock = Mock::new("", 64, |cmd| {
            format!(
                "{{\"error\": {{\"class\": \"GenericError\", \"desc\": \"nope\"}}, \"id\": {}}}\r\n",
                id_of(cmd)
            )
        });
        let mut c = Client::new(mock, Duration::from_secs(1));
        assert!(matches!(c.negotiate(), Err(Error::Qmp { .. })));
    }

    #[test]
    fn times_out_when_only_stale_data_arrives() {
        let mock = Mock::new(GREETING, 64, |_| {
            "{\"return\": {}, \"id\": \"old\"}\r\n".into()
        });
        let mut c = Client::new(mock, Duration::from_millis(30));
        let start = Instant::now();
        let err = c.execute("qmp_capabilities", None).unwrap_err();
        assert!(matches!(err, Error::Timeout { ref command, .. } if command == "qmp_capabilities"));
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert!(err.to_string().contains("qmp_capabilities"), "{err}");
    }

    #[test]
    fn reports_closed_stream() {
        struct Eof;
        impl Read for Eof {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Ok(0)
            }
        }
        impl Write for Eof {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        impl Transport for Eof {
            fn set_read_timeout(&mut self, _: Duration) -> io::Result<()> {
                Ok(())
            }
        }
        let mut c = Client::new(Eof, Duration::from_secs(1));
        assert!(matches!(c.negotiate(), Err(Error::Closed)));
    }

    #[test]
    fn raw_commands_get_a_fresh_id_and_full_reply() {
        let mock = Mock::new("", 64, |cmd| {
            format!(
                "{{\"return\": {{\"echo\": {}}}, \"id\": {}}}\r\n",
                cmd,
                id_of(cmd)
            )
        });
        let mut c = Client::new(mock, Duration::from_secs(1)).with_id_prefix("r");
        let cmd = json::parse(r#"{"execute": "query-status", "id": "mine"}"#).unwrap();
        let reply = c.execute_raw(cmd).unwrap();
        assert_eq!(reply.get("id").unwrap().as_str(), Some("r-1"));
        let echoed = reply.get("return").unwrap().get("echo").unwrap();
        assert_eq!(
            echoed.get("execute").unwrap().as_str(),
            Some("query-status")
        );
        assert!(c.execute_raw(Value::from("x")).is_err());
    }

    #[test]
    fn reply_matching() {
        let ok = json::parse(r#"{"return": {}, "id": "a-1"}"#).unwrap();
        let err = json::parse(r#"{"error": {"class": "X", "desc": "y"}, "id": "a-1"}"#).unwrap();
        let event = json::parse(r#"{"event": "E", "return": 1, "id": "a-1"}"#).unwrap();
        let greeting = json::parse(r#"{"QMP": {}, "return": 1, "id": "a-1"}"#).unwrap();
        let numeric_id = json::parse(r#"{"return": {}, "id": 1}"#).unwrap();
        let no_id = json::parse(r#"{"return": {}}"#).unwrap();
        assert!(is_reply_to(&ok, "a-1"));
        assert!(is_reply_to(&err, "a-1"));
        assert!(!is_reply_to(&ok, "a-2"));
        assert!(!is_reply_to(&event, "a-1"));
        assert!(!is_reply_to(&greeting, "a-1"));
        assert!(!is_reply_to(&numeric_id, "1"));
        assert!(!is_reply_to(&no_id, "a-1"));
    }
}
