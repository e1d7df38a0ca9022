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
//! id, events included. Unparsable bytes are dropped up to the next line
//! break (QEMU ends each message with CRLF). Reads are bounded by a timeout
//! so a dead peer gives an error rather than a hang.
//!
//! Events (QMP sends them on every monitor whose capabilities are
//! negotiated) are read with [`Client::next_event`], which in turn skips
//! answers. An event that arrives while a command waits for its answer is
//! dropped: it is older than the answer, and on a shared stream it may be
//! left over from long ago.

use std::fmt;
use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::framing::{Framer, Object, MAX_BUFFER};
use crate::transport::Transport;

/// Default bound on the wait for one reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes sent by [`Client::resync`]: an ASCII control character other than
/// TAB, CR and LF is a lexical error for QEMU's JSON parser, which makes it
/// drop whatever partial input it holds and start afresh (see "Forcing the
/// JSON parser into known-good state" in QEMU's QMP specification). QEMU
/// answers with an error that carries no id, which the client ignores.
const RESYNC_BYTES: &[u8] = b"\x1b\r\n";

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
    /// The peer sent something that is not QMP, or not what the command
    /// returns.
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

/// A command as sent: `{"execute": NAME, "arguments": {...}, "id": ID}`.
#[derive(Serialize)]
struct Request<'a, A> {
    execute: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a A>,
    id: &'a str,
}

/// The answer to a command: `{"return": VALUE, "id": ID}` or
/// `{"error": {"class": ..., "desc": ...}, "id": ID}`.
#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "return")]
    ret: Option<Value>,
    error: Option<ErrorDesc>,
}

/// The `error` member of an answer.
#[derive(Deserialize)]
struct ErrorDesc {
    #[serde(default)]
    class: String,
    #[serde(default)]
    desc: String,
}

/// An asynchronous event: `{"event": NAME, "data": {...}, "timestamp": {...}}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Event {
    /// The event's name, e.g. `MEMORY_DEVICE_SIZE_CHANGE`.
    pub event: String,
    /// Its members; `null` for an event without any.
    #[serde(default)]
    pub data: Value,
}

/// A QMP client over any [`Transport`].
pub struct Client<S: Transport> {
    stream: S,
    /// Bytes read but not yet consumed as messages.
    framer: Framer,
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
            framer: Framer::new(),
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
        match self.execute::<serde::de::IgnoredAny>("qmp_capabilities") {
            Ok(_) => Ok(()),
            Err(Error::Qmp { class, desc })
                if class == "CommandNotFound" || desc.contains("already complete") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Runs `command` without arguments; see [`Client::execute_with`].
    pub fn execute<T: DeserializeOwned>(&mut self, command: &str) -> Result<T, Error> {
        self.call::<(), T>(command, None)
    }

    /// Runs `command` with `arguments` and returns the `return` value of its
    /// reply as a `T`, or [`Error::Qmp`] if QEMU answered with an error.
    pub fn execute_with<A: Serialize, T: DeserializeOwned>(
        &mut self,
        command: &str,
        arguments: &A,
    ) -> Result<T, Error> {
        self.call(command, Some(arguments))
    }

    fn call<A: Serialize, T: DeserializeOwned>(
        &mut self,
        command: &str,
        arguments: Option<&A>,
    ) -> Result<T, Error> {
        let id = self.next_id();
        self.send(&Request {
            execute: command,
            arguments,
            id: &id,
        })?;
        let reply = self.await_reply(command, &id)?;
        let answer = Answer::deserialize(&reply).map_err(|e| {
            Error::Protocol(format!("malformed reply {}: {e}", Value::Object(reply)))
        })?;
        match answer {
            Answer {
                error: Some(err), ..
            } => Err(Error::Qmp {
                class: err.class,
                desc: err.desc,
            }),
            Answer { ret: Some(ret), .. } => T::deserialize(&ret).map_err(|e| {
                Error::Protocol(format!("unexpected answer to {command}: {ret}: {e}"))
            }),
            Answer { ret: None, .. } => Err(Error::Protocol(format!(
                "reply to {command} has neither return nor error"
            ))),
        }
    }

    /// Sends the command object `msg` (any `id` in it is replaced by a fresh
    /// one) and returns the whole matching reply object, error or not.
    pub fn execute_raw(&mut self, mut msg: Object) -> Result<Object, Error> {
        let command = msg
            .get("execute")
            .or_else(|| msg.get("exec-oob"))
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        let id = self.next_id();
        msg.insert("id".to_owned(), Value::from(id.as_str()));
        self.send(&msg)?;
        self.await_reply(&command, &id)
    }

    /// Waits until `deadline` for the next event; `None` when the deadline
    /// passes first. Answers, greetings and anything else that is not an
    /// event are dropped on the way.
    pub fn next_event(&mut self, deadline: Instant) -> Result<Option<Event>, Error> {
        loop {
            let msg = match self.read_message(deadline) {
                Ok(msg) => msg,
                Err(Error::Timeout { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            if msg.contains_key("QMP") {
                continue;
            }
            if let Ok(event) = Event::deserialize(&msg) {
                return Ok(Some(event));
            }
        }
    }

    fn next_id(&mut self) -> String {
        let id = format!("{}-{}", self.id_prefix, self.next_seq);
        self.next_seq += 1;
        id
    }

    /// Writes `msg` as one line, as QEMU expects.
    fn send(&mut self, msg: &impl Serialize) -> Result<(), Error> {
        let mut line = serde_json::to_vec(msg)
            .map_err(|e| Error::Protocol(format!("cannot encode the command: {e}")))?;
        line.extend_from_slice(b"\r\n");
        self.stream.write_all(&line)?;
        self.stream.flush()?;
        Ok(())
    }

    /// Reads until the reply to the command with `id` arrives.
    fn await_reply(&mut self, command: &str, id: &str) -> Result<Object, Error> {
        let start = Instant::now();
        let deadline = start + self.timeout;
        loop {
            let msg = self.read_message(deadline).map_err(|e| match e {
                Error::Timeout { .. } => Error::Timeout {
                    command: command.to_owned(),
                    waited: start.elapsed(),
                },
                e => e,
            })?;
            if is_reply_to(&msg, id) {
                return Ok(msg);
            }
            // A greeting, an event, or a stale reply: not ours.
        }
    }

    /// Reads the next top-level JSON object from the stream, dropping
    /// anything unparsable and any non-object value.
    fn read_message(&mut self, deadline: Instant) -> Result<Object, Error> {
        loop {
            if let Some(msg) = self.framer.next_object() {
                return Ok(msg);
            }
            if self.framer.buffered() > MAX_BUFFER {
                return Err(Error::Protocol(format!(
                    "more than {MAX_BUFFER} bytes without a complete message"
                )));
            }
            self.fill(deadline)?;
        }
    }

    /// Reads more bytes into the framer, waiting at most until `deadline`.
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
                    self.framer.push(&chunk[..n]);
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
pub fn is_reply_to(msg: &Object, id: &str) -> bool {
    !msg.contains_key("QMP")
        && !msg.contains_key("event")
        && (msg.contains_key("return") || msg.contains_key("error"))
        && msg.get("id").and_then(Value::as_str) == Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
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
                let cmd: Value = serde_json::from_str(&text).unwrap();
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
        let args = json!({"path": "/p", "property": "size"});
        assert_eq!(
            c.execute_with::<_, u64>("qom-get", &args).unwrap(),
            u64::MAX
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
            c.execute::<Value>("query-memory-devices").unwrap(),
            json!([])
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
        match c.execute::<Value>("qom-get") {
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
        let err = c.execute::<Value>("qmp_capabilities").unwrap_err();
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
        let cmd = serde_json::from_str(r#"{"execute": "query-status", "id": "mine"}"#).unwrap();
        let reply = c.execute_raw(cmd).unwrap();
        assert_eq!(reply.get("id").unwrap().as_str(), Some("r-1"));
        let echoed = reply.get("return").unwrap().get("echo").unwrap();
        assert_eq!(
            echoed.get("execute").unwrap().as_str(),
            Some("query-status")
        );
        // The caller's id was replaced in place: the member order stays.
        assert_eq!(
            echoed.to_string(),
            r#"{"execute":"query-status","id":"r-1"}"#
        );
    }

    #[test]
    fn commands_are_one_line_each_with_arguments_only_when_given() {
        let mock = Mock::new("", 64, |cmd| {
            format!("{{\"return\": {{}}, \"id\": {}}}\r\n", id_of(cmd))
        });
        let mut c = Client::new(mock, Duration::from_secs(1)).with_id_prefix("w");
        c.execute::<Value>("query-status").unwrap();
        c.execute_with::<_, Value>("qom-get", &json!({"path": "/p", "property": "size"}))
            .unwrap();
        assert_eq!(
            String::from_utf8(c.get_mut().raw_written.clone()).unwrap(),
            "{\"execute\":\"query-status\",\"id\":\"w-1\"}\r\n\
             {\"execute\":\"qom-get\",\"arguments\":{\"path\":\"/p\",\"property\":\"size\"},\
             \"id\":\"w-2\"}\r\n"
        );
    }

    #[test]
    fn answers_of_the_wrong_type_are_protocol_errors() {
        let mock = Mock::new("", 64, |cmd| {
            format!("{{\"return\": \"big\", \"id\": {}}}\r\n", id_of(cmd))
        });
        let mut c = Client::new(mock, Duration::from_secs(1));
        match c.execute::<u64>("qom-get") {
            Err(Error::Protocol(msg)) => {
                assert!(msg.contains("qom-get") && msg.contains("\"big\""), "{msg}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn events_are_read_in_order_skipping_everything_else() {
        // A stale answer, a greeting and garbage around two events; the
        // second event is split across reads.
        let pending = "{\"return\": {}, \"id\": \"old-1\"}\r\n\
                       {\"event\": \"SHUTDOWN\", \"data\": {\"guest\": true}, \
                       \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\r\n\
                       not json\r\n\
                       {\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n\
                       {\"event\": \"RESUME\", \"timestamp\": {\"seconds\": 3, \"microseconds\": 4}}\r\n";
        let mock = Mock::new(pending, 9, |cmd| panic!("unexpected command {cmd}"));
        let mut c = Client::new(mock, Duration::from_secs(1));
        let deadline = Instant::now() + Duration::from_secs(1);
        let first = c.next_event(deadline).unwrap().unwrap();
        assert_eq!(first.event, "SHUTDOWN");
        assert_eq!(first.data, json!({"guest": true}));
        let second = c.next_event(deadline).unwrap().unwrap();
        assert_eq!(second.event, "RESUME");
        assert_eq!(second.data, Value::Null);
        // Nothing more: the deadline ends the wait without an error.
        let start = Instant::now();
        let deadline = start + Duration::from_millis(30);
        assert_eq!(c.next_event(deadline).unwrap(), None);
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn events_before_an_answer_are_dropped() {
        let mock = Mock::new("", 64, |cmd| {
            format!(
                "{{\"event\": \"MEMORY_DEVICE_SIZE_CHANGE\", \"data\": {{\"id\": \"vm0\", \
                 \"size\": 5, \"qom-path\": \"/machine/peripheral/vm0\"}}}}\r\n\
                 {{\"return\": 7, \"id\": {}}}\r\n\
                 {{\"event\": \"MEMORY_DEVICE_SIZE_CHANGE\", \"data\": {{\"id\": \"vm0\", \
                 \"size\": 9, \"qom-path\": \"/machine/peripheral/vm0\"}}}}\r\n",
                id_of(cmd)
            )
        });
        let mut c = Client::new(mock, Duration::from_secs(1));
        assert_eq!(c.execute::<u64>("qom-get").unwrap(), 7);
        let deadline = Instant::now() + Duration::from_secs(1);
        let event = c.next_event(deadline).unwrap().unwrap();
        assert_eq!(event.data["size"], json!(9));
        assert_eq!(c.next_event(Instant::now()).unwrap(), None);
    }

    #[test]
    fn reply_matching() {
        let parse = |text: &str| -> Object { serde_json::from_str(text).unwrap() };
        let ok = parse(r#"{"return": {}, "id": "a-1"}"#);
        let err = parse(r#"{"error": {"class": "X", "desc": "y"}, "id": "a-1"}"#);
        let event = parse(r#"{"event": "E", "return": 1, "id": "a-1"}"#);
        let greeting = parse(r#"{"QMP": {}, "return": 1, "id": "a-1"}"#);
        let numeric_id = parse(r#"{"return": {}, "id": 1}"#);
        let no_id = parse(r#"{"return": {}}"#);
        assert!(is_reply_to(&ok, "a-1"));
        assert!(is_reply_to(&err, "a-1"));
        assert!(!is_reply_to(&ok, "a-2"));
        assert!(!is_reply_to(&event, "a-1"));
        assert!(!is_reply_to(&greeting, "a-1"));
        assert!(!is_reply_to(&numeric_id, "1"));
        assert!(!is_reply_to(&no_id, "a-1"));
    }
}
