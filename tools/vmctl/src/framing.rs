//! Cutting the bytes from a QMP server into messages.
//!
//! QEMU writes every message as one JSON object followed by CRLF. On a
//! shared, long-lived stream (see [`crate::qmp`]) the bytes may begin in the
//! middle of a message whose head someone else read, so the framer tells a
//! valid but unfinished beginning ("wait for more bytes") from garbage
//! ("drop it"), and resynchronises on line breaks. The JSON itself is
//! serde_json's, which keeps integers up to 2^64 - 1 exact (QEMU sizes use
//! all 64 bits) and, with `preserve_order`, the server's member order.

use serde_json::{Map, Value};

/// Refuse to buffer more than this much without finding a message.
pub const MAX_BUFFER: usize = 64 << 20;

/// A JSON object as it came from the server.
pub type Object = Map<String, Value>;

/// Bytes received and not yet taken as messages.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
}

/// What the start of the buffer holds.
enum Head {
    /// A complete value, and how many bytes it took.
    Value(Value, usize),
    /// The beginning of a value: more bytes may complete it.
    Incomplete,
    /// Bytes that cannot begin any JSON value.
    Garbage,
}

impl Framer {
    /// An empty framer.
    pub fn new() -> Framer {
        Framer::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// How many bytes are waiting.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Takes the next complete JSON object from the buffer, dropping garbage
    /// and values that are not objects (QMP sends nothing else) on the way.
    /// `None` means more bytes are needed.
    pub fn next_object(&mut self) -> Option<Object> {
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
            match self.head() {
                Head::Value(value, used) => {
                    self.buf.drain(..used);
                    if let Value::Object(object) = value {
                        return Some(object);
                    }
                }
                Head::Incomplete => {
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
                Head::Garbage => {
                    // Drop through the end of the line, or all of it if the
                    // line has not ended yet (its end will be dropped when it
                    // arrives, as it cannot parse either).
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

    fn head(&self) -> Head {
        let mut values = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
        match values.next() {
            Some(Ok(value)) => Head::Value(value, values.byte_offset()),
            Some(Err(e)) if e.is_eof() => Head::Incomplete,
            Some(Err(_)) => Head::Garbage,
            // Only whitespace, which the caller already skipped.
            None => Head::Incomplete,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn framer(bytes: &[u8]) -> Framer {
        let mut f = Framer::new();
        f.push(bytes);
        f
    }

    #[test]
    fn takes_whole_messages_and_leaves_the_rest() {
        let mut f = framer(b"  {\"a\": 1}\r\n{\"b\": [true, null]}\r\n{\"c\"");
        assert_eq!(Value::Object(f.next_object().unwrap()), json!({"a": 1}));
        assert_eq!(
            Value::Object(f.next_object().unwrap()),
            json!({"b": [true, null]})
        );
        assert_eq!(f.next_object(), None);
        assert_eq!(f.buffered(), "{\"c\"".len());
        f.push(b": 2}\r\n");
        assert_eq!(Value::Object(f.next_object().unwrap()), json!({"c": 2}));
        assert_eq!(f.next_object(), None);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn waits_for_the_rest_of_unfinished_messages() {
        for partial in [
            &b"{\"return\": {}, \"i"[..],
            b"{\"return\": [1, 2",
            b"{\"desc\": \"abc",
            b"{\"desc\": \"\\u00",
            b"{\"desc\": \"\\ud83d",
            b"{\"desc\": \"\\ud83d\\u",
            b"{\"return\": 12",
            b"{\"return\": -",
            b"{\"return\": tr",
            b"  ",
            b"",
        ] {
            let mut f = framer(partial);
            assert_eq!(f.next_object(), None, "{partial:?}");
            assert_eq!(
                f.buffered(),
                partial.trim_ascii_start().len(),
                "{partial:?} must be kept"
            );
        }
        // Split inside a surrogate pair: still one character.
        let mut f = framer(b"{\"desc\": \"\\ud83d");
        assert_eq!(f.next_object(), None);
        f.push(b"\\ude00\"}\n");
        assert_eq!(
            Value::Object(f.next_object().unwrap()),
            json!({"desc": "\u{1f600}"})
        );
    }

    #[test]
    fn drops_garbage_through_the_end_of_its_line() {
        // The tail of a message whose head someone else read, a bare value,
        // bytes that are not UTF-8, then a real message.
        let mut f = framer(
            b"ze\": 5}, \"id\": \"vmctl-9-1\"}\r\n\"a bare string\"\r\n[1]\r\n\xff{}\r\n\
              {\"return\": {}, \"id\": \"x\"}\r\n",
        );
        assert_eq!(
            Value::Object(f.next_object().unwrap()),
            json!({"return": {}, "id": "x"})
        );
        // Garbage whose line has not ended yet goes, and so does the rest of
        // the line when it comes.
        let mut f = framer(b"}, \"id\": 1");
        assert_eq!(f.next_object(), None);
        assert_eq!(f.buffered(), 0);
        f.push(b"2}\r\n{\"event\": \"E\"}\r\n");
        assert_eq!(
            Value::Object(f.next_object().unwrap()),
            json!({"event": "E"})
        );
    }

    #[test]
    fn restarts_at_a_line_that_begins_a_message() {
        // An unfinished message whose end will never come: a new line
        // starting with `{` shows that it was cut off.
        let mut f = framer(b"{\"return\": [1, 2, \r\n{\"return\": {}, \"id\": \"t-2\"}\r\n");
        assert_eq!(
            Value::Object(f.next_object().unwrap()),
            json!({"return": {}, "id": "t-2"})
        );
        assert_eq!(f.next_object(), None);
    }

    #[test]
    fn keeps_64_bit_integers_and_member_order() {
        let text = b"{\"return\": 18446744073709551615, \"z\": -9223372036854775808, \"a\": 1}\n";
        let object = framer(text).next_object().unwrap();
        assert_eq!(object["return"].as_u64(), Some(u64::MAX));
        assert_eq!(object["z"].as_i64(), Some(i64::MIN));
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        assert_eq!(keys, ["return", "z", "a"]);
        assert_eq!(
            Value::Object(object).to_string(),
            "{\"return\":18446744073709551615,\"z\":-9223372036854775808,\"a\":1}"
        );
    }

    #[test]
    fn rejects_nesting_too_deep_for_the_stack() {
        let deep = "[".repeat(10_000) + "\n{\"event\": \"E\"}\n";
        let mut f = framer(deep.as_bytes());
        assert_eq!(
            Value::Object(f.next_object().unwrap()),
            json!({"event": "E"})
        );
    }
}
