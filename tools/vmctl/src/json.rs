//! A small, dependency-free JSON value type with a parser and a serializer.
//!
//! Only what QMP needs, but complete for standard JSON (RFC 8259):
//!
//! * integers are kept exact: non-negative ones as `u64` (QEMU sizes go up to
//!   2^64 - 1), negative ones as `i64`; only numbers with a fraction or an
//!   exponent (or that do not fit 64 bits) become `f64`;
//! * objects keep their keys in order (QMP never relies on it, but it keeps
//!   re-serialized output faithful);
//! * the parser can tell "this input is a valid prefix, give me more bytes"
//!   ([`ErrorKind::Incomplete`]) from "this input is garbage"
//!   ([`ErrorKind::Invalid`]), which the stream reader in [`crate::qmp`]
//!   relies on.

use std::fmt::{self, Write as _};

/// Nesting deeper than this is rejected, so garbage like `[[[[...` cannot
/// overflow the stack.
const MAX_DEPTH: usize = 128;

/// A JSON number, kept exact where possible.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// A non-negative integer.
    UInt(u64),
    /// A negative integer.
    Int(i64),
    /// Anything with a fraction or exponent, or an integer beyond 64 bits.
    Float(f64),
}

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`
    Null,
    /// `true` or `false`
    Bool(bool),
    /// A number, see [`Number`].
    Number(Number),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object, keys in input order.
    Object(Vec<(String, Value)>),
}

impl Value {
    /// Builds an object from `(key, value)` pairs.
    pub fn object<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Object(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// Looks up `key` if `self` is an object (the first one, should there be
    /// duplicates).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(pairs) => pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Sets `key` to `value` in an object, replacing an existing entry.
    /// Does nothing if `self` is not an object.
    pub fn set(&mut self, key: &str, value: Value) {
        if let Value::Object(pairs) = self {
            match pairs.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = value,
                None => pairs.push((key.to_owned(), value)),
            }
        }
    }

    /// The value as `u64`, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Number(Number::UInt(n)) => Some(*n),
            _ => None,
        }
    }

    /// The value as `&str`, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements, if the value is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    /// Whether the value is an object.
    pub fn is_object(&self) -> bool {
        matches!(self, Value::Object(_))
    }

    /// Serializes with two-space indentation, one member per line.
    pub fn to_pretty_string(&self) -> String {
        let mut out = String::new();
        write_pretty(&mut out, self, 0).expect("writing to a String cannot fail");
        out
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Value {
        Value::Number(Number::UInt(n))
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        match u64::try_from(n) {
            Ok(u) => Value::Number(Number::UInt(u)),
            Err(_) => Value::Number(Number::Int(n)),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::String(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

/// Compact serialization: no whitespace at all, always valid JSON (a float
/// that is NaN or infinite, which JSON cannot express, is written as `null`).
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Number(n) => write_number(f, n),
            Value::String(s) => write_string(f, s),
            Value::Array(items) => {
                f.write_char('[')?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_char(']')
            }
            Value::Object(pairs) => {
                f.write_char('{')?;
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write_string(f, k)?;
                    write!(f, ":{v}")?;
                }
                f.write_char('}')
            }
        }
    }
}

fn write_number(out: &mut impl fmt::Write, n: &Number) -> fmt::Result {
    match *n {
        Number::UInt(u) => write!(out, "{u}"),
        Number::Int(i) => write!(out, "{i}"),
        // Rust's `Display` for f64 never uses exponent notation and prints
        // the shortest representation that round-trips; both are valid JSON.
        Number::Float(x) if x.is_finite() => write!(out, "{x}"),
        Number::Float(_) => out.write_str("null"),
    }
}

fn write_string(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            '\u{08}' => out.write_str("\\b")?,
            '\u{0c}' => out.write_str("\\f")?,
            c if u32::from(c) < 0x20 || c == '\u{7f}' => write!(out, "\\u{:04x}", u32::from(c))?,
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

fn write_pretty(out: &mut String, v: &Value, indent: usize) -> fmt::Result {
    const STEP: usize = 2;
    match v {
        Value::Array(items) if !items.is_empty() => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                push_indent(out, indent + STEP);
                write_pretty(out, item, indent + STEP)?;
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            push_indent(out, indent);
            out.push(']');
        }
        Value::Object(pairs) if !pairs.is_empty() => {
            out.push_str("{\n");
            for (i, (k, item)) in pairs.iter().enumerate() {
                push_indent(out, indent + STEP);
                write_string(out, k)?;
                out.push_str(": ");
                write_pretty(out, item, indent + STEP)?;
                out.push_str(if i + 1 < pairs.len() { ",\n" } else { "\n" });
            }
            push_indent(out, indent);
            out.push('}');
        }
        other => write!(out, "{other}")?,
    }
    Ok(())
}

fn push_indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// Why parsing failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input ended inside a value: it is a valid prefix, more bytes may
    /// complete it.
    Incomplete,
    /// The input cannot be the start of any JSON value.
    Invalid(String),
}

/// A parse error, with the byte offset at which it was detected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Byte offset into the input.
    pub offset: usize,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Incomplete => write!(f, "unexpected end of JSON input"),
            ErrorKind::Invalid(msg) => write!(f, "invalid JSON at byte {}: {msg}", self.offset),
        }
    }
}

impl std::error::Error for Error {}

/// Parses a complete JSON document: one value, optionally surrounded by
/// whitespace, and nothing else.
pub fn parse(text: &str) -> Result<Value, Error> {
    let bytes = text.as_bytes();
    let mut p = Parser {
        input: bytes,
        pos: 0,
        end_is_final: true,
    };
    p.skip_ws();
    let v = p.value(0)?;
    p.skip_ws();
    if p.pos != bytes.len() {
        return Err(p.invalid("trailing characters after the JSON value"));
    }
    Ok(v)
}

/// Parses one JSON value from the start of `input`, which may be only a
/// prefix of a longer stream.
///
/// Leading whitespace is skipped. On success returns the value and the
/// number of bytes it consumed (trailing whitespace is left alone). If the
/// bytes seen so far are a valid but unfinished value the error kind is
/// [`ErrorKind::Incomplete`]; this includes a top-level number that reaches
/// the end of the input, since more digits may follow.
pub fn parse_prefix(input: &[u8]) -> Result<(Value, usize), Error> {
    let mut p = Parser {
        input,
        pos: 0,
        end_is_final: false,
    };
    p.skip_ws();
    let v = p.value(0)?;
    Ok((v, p.pos))
}

/// A recursive-descent parser over bytes.
struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    /// Whether the end of `input` is the end of the document (so a number
    /// running into it is finished) or just the end of what arrived so far.
    end_is_final: bool,
}

impl Parser<'_> {
    fn invalid(&self, msg: impl Into<String>) -> Error {
        Error {
            kind: ErrorKind::Invalid(msg.into()),
            offset: self.pos,
        }
    }

    fn incomplete(&self) -> Error {
        Error {
            kind: ErrorKind::Incomplete,
            offset: self.pos,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    /// The next byte, or `Incomplete` at the end of input.
    fn next(&mut self) -> Result<u8, Error> {
        let b = self.peek().ok_or_else(|| self.incomplete())?;
        self.pos += 1;
        Ok(b)
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, Error> {
        if depth > MAX_DEPTH {
            return Err(self.invalid("nesting too deep"));
        }
        match self.peek() {
            None => Err(self.incomplete()),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Value::String),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b) => Err(self.invalid(format!("unexpected byte 0x{b:02x}"))),
        }
    }

    fn literal(&mut self, word: &str, v: Value) -> Result<Value, Error> {
        for &expected in word.as_bytes() {
            match self.peek() {
                None => return Err(self.incomplete()),
                Some(b) if b == expected => self.pos += 1,
                Some(_) => return Err(self.invalid(format!("expected `{word}`"))),
            }
        }
        Ok(v)
    }

    fn object(&mut self, depth: usize) -> Result<Value, Error> {
        self.pos += 1; // '{'
        let mut pairs = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(pairs));
        }
        loop {
            self.skip_ws();
            match self.peek() {
                None => return Err(self.incomplete()),
                Some(b'"') => {}
                Some(_) => return Err(self.invalid("expected a string as object key")),
            }
            let key = self.string()?;
            self.skip_ws();
            match self.next()? {
                b':' => {}
                _ => {
                    self.pos -= 1;
                    return Err(self.invalid("expected `:` after object key"));
                }
            }
            self.skip_ws();
            let v = self.value(depth + 1)?;
            pairs.push((key, v));
            self.skip_ws();
            match self.next()? {
                b',' => continue,
                b'}' => return Ok(Value::Object(pairs)),
                _ => {
                    self.pos -= 1;
                    return Err(self.invalid("expected `,` or `}` in object"));
                }
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, Error> {
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.next()? {
                b',' => continue,
                b']' => return Ok(Value::Array(items)),
                _ => {
                    self.pos -= 1;
                    return Err(self.invalid("expected `,` or `]` in array"));
                }
            }
        }
    }

    /// Parses a string starting at the opening quote.
    fn string(&mut self) -> Result<String, Error> {
        self.pos += 1; // '"'
        let mut out = Vec::new();
        loop {
            match self.next()? {
                b'"' => break,
                b'\\' => {
                    let c = match self.next()? {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{08}',
                        b'f' => '\u{0c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => {
                            self.pos -= 1;
                            return Err(self.invalid("unknown escape sequence"));
                        }
                    };
                    let mut utf8 = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                }
                b if b < 0x20 => {
                    self.pos -= 1;
                    return Err(self.invalid("raw control character in string"));
                }
                b => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|_| self.invalid("string is not valid UTF-8"))
    }

    fn hex4(&mut self) -> Result<u16, Error> {
        let mut v = 0u16;
        for _ in 0..4 {
            let b = self.next()?;
            let digit = (b as char).to_digit(16).ok_or_else(|| {
                self.pos -= 1;
                self.invalid("bad hex digit in \\u escape")
            })?;
            v = v << 4 | digit as u16;
        }
        Ok(v)
    }

    /// Decodes the part after `\u`, including a following low surrogate.
    /// Unpaired surrogates become U+FFFD rather than failing the message.
    fn unicode_escape(&mut self) -> Result<char, Error> {
        let hi = self.hex4()?;
        if !(0xD800..0xDC00).contains(&hi) {
            return Ok(char::from_u32(u32::from(hi)).unwrap_or('\u{FFFD}'));
        }
        // A high surrogate: a `\uDC00`..`\uDFFF` should follow.
        let rest = &self.input[self.pos..];
        if rest.is_empty() || rest == b"\\" {
            // Cannot tell yet whether the pair is completed.
            return Err(Error {
                kind: ErrorKind::Incomplete,
                offset: self.input.len(),
            });
        }
        if rest.starts_with(b"\\u") {
            let save = self.pos;
            self.pos += 2;
            let lo = self.hex4()?;
            if (0xDC00..0xE000).contains(&lo) {
                let c = 0x10000 + ((u32::from(hi) - 0xD800) << 10) + (u32::from(lo) - 0xDC00);
                return Ok(char::from_u32(c).unwrap_or('\u{FFFD}'));
            }
            self.pos = save;
        }
        Ok('\u{FFFD}')
    }

    fn number(&mut self) -> Result<Value, Error> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let int_start = self.pos;
        self.digits()?;
        let int_digits = &self.input[int_start..self.pos];
        if int_digits.is_empty() {
            return Err(self.invalid("expected digits"));
        }
        if int_digits.len() > 1 && int_digits[0] == b'0' {
            return Err(self.invalid("leading zeros are not allowed"));
        }
        let mut is_float = false;
        if self.peek() == Some(b'.') {
            is_float = true;
            self.pos += 1;
            let frac_start = self.pos;
            self.digits()?;
            if self.pos == frac_start {
                return Err(self.invalid("expected digits after `.`"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            is_float = true;
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            let exp_start = self.pos;
            self.digits()?;
            if self.pos == exp_start {
                return Err(self.invalid("expected digits in exponent"));
            }
        }
        // Only ASCII digits, signs, '.', 'e' were consumed.
        let text = std::str::from_utf8(&self.input[start..self.pos]).expect("ASCII");
        if !is_float {
            if negative {
                if let Ok(i) = text.parse::<i64>() {
                    return Ok(Value::from(i));
                }
            } else if let Ok(u) = text.parse::<u64>() {
                return Ok(Value::from(u));
            }
        }
        text.parse::<f64>()
            .map(|x| Value::Number(Number::Float(x)))
            .map_err(|_| self.invalid("bad number"))
    }

    /// Consumes a run of ASCII digits. Running into the end of a streamed
    /// input is `Incomplete`: the number may go on in the next chunk.
    fn digits(&mut self) -> Result<(), Error> {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        if self.pos == self.input.len() && !self.end_is_final {
            return Err(self.incomplete());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(pairs: &[(&str, Value)]) -> Value {
        Value::object(pairs.iter().cloned())
    }

    #[test]
    fn parses_scalars() {
        assert_eq!(parse("null").unwrap(), Value::Null);
        assert_eq!(parse(" true ").unwrap(), Value::Bool(true));
        assert_eq!(parse("false").unwrap(), Value::Bool(false));
        assert_eq!(parse("0").unwrap(), Value::from(0u64));
        assert_eq!(parse("\"x\"").unwrap(), Value::from("x"));
    }

    #[test]
    fn parses_big_and_negative_integers_exactly() {
        assert_eq!(
            parse("18446744073709551615").unwrap().as_u64(),
            Some(u64::MAX)
        );
        assert_eq!(
            parse("4294967296").unwrap(),
            Value::Number(Number::UInt(1 << 32))
        );
        assert_eq!(parse("-1").unwrap(), Value::Number(Number::Int(-1)));
        assert_eq!(
            parse("-9223372036854775808").unwrap(),
            Value::Number(Number::Int(i64::MIN))
        );
        assert_eq!(parse("-0").unwrap(), Value::from(0u64));
        // Beyond 64 bits: falls back to a float rather than failing.
        assert_eq!(
            parse("18446744073709551616").unwrap(),
            Value::Number(Number::Float(18446744073709551616.0))
        );
    }

    #[test]
    fn parses_floats() {
        assert_eq!(parse("1.5").unwrap(), Value::Number(Number::Float(1.5)));
        assert_eq!(
            parse("-2e3").unwrap(),
            Value::Number(Number::Float(-2000.0))
        );
        assert_eq!(parse("1E-2").unwrap(), Value::Number(Number::Float(0.01)));
    }

    #[test]
    fn parses_nested_structures() {
        let v = parse(r#" { "a" : [1, {"b": null}, []], "c": {"d": {"e": [true]}}, "f": {} } "#)
            .unwrap();
        assert_eq!(
            v,
            obj(&[
                (
                    "a",
                    Value::Array(vec![
                        Value::from(1u64),
                        obj(&[("b", Value::Null)]),
                        Value::Array(vec![]),
                    ])
                ),
                (
                    "c",
                    obj(&[("d", obj(&[("e", Value::Array(vec![Value::Bool(true)]))]))])
                ),
                ("f", obj(&[])),
            ])
        );
        assert_eq!(
            v.get("c").and_then(|c| c.get("d")).and_then(|d| d.get("e")),
            Some(&Value::Array(vec![Value::Bool(true)]))
        );
    }

    #[test]
    fn parses_escapes() {
        let v =
            parse(r#""q\" b\\ s\/ \b\f\n\r\t \u0041\u00e9\u20AC \ud83d\ude00 \u0000""#).unwrap();
        assert_eq!(
            v.as_str().unwrap(),
            "q\" b\\ s/ \u{8}\u{c}\n\r\t A\u{e9}\u{20ac} \u{1f600} \u{0}"
        );
        // Unpaired surrogates are replaced, not fatal.
        assert_eq!(parse(r#""\ud800x""#).unwrap().as_str(), Some("\u{fffd}x"));
        assert_eq!(parse(r#""\udc00""#).unwrap().as_str(), Some("\u{fffd}"));
        // Raw UTF-8 passes through.
        assert_eq!(parse("\"h\u{e9}\"").unwrap().as_str(), Some("h\u{e9}"));
    }

    #[test]
    fn rejects_invalid_input() {
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\" 1}",
            "{a:1}",
            "01",
            "1.",
            "-",
            "tru",
            "nul",
            "\"\\x\"",
            "\"a\nb\"",
            "[1] x",
            "{\"a\":1,}",
            "\"\\u12g4\"",
            "+1",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
        let deep = "[".repeat(MAX_DEPTH + 2) + &"]".repeat(MAX_DEPTH + 2);
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn prefix_parsing_distinguishes_incomplete_from_invalid() {
        let (v, n) = parse_prefix(b"  {\"a\": 1}\r\n{\"b\"").unwrap();
        assert_eq!(v, obj(&[("a", Value::from(1u64))]));
        assert_eq!(n, 10);
        for partial in [
            &b"{\"return\": {}, \"i"[..],
            b"[1, 2",
            b"\"abc",
            b"\"\\u00",
            b"\"\\ud83d",
            b"\"\\ud83d\\u",
            b"12",
            b"-",
            b"tr",
            b"  ",
            b"",
        ] {
            let err = parse_prefix(partial).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Incomplete, "{partial:?}");
        }
        for garbage in [&b"}, \"id\": 1}"[..], b"ze\": 5}", b"\xff{}", b"{\"a\" 1"] {
            let err = parse_prefix(garbage).unwrap_err();
            assert!(matches!(err.kind, ErrorKind::Invalid(_)), "{garbage:?}");
        }
        // A number is finished by any non-digit.
        assert_eq!(parse_prefix(b"12 ").unwrap(), (Value::from(12u64), 2));
    }

    #[test]
    fn serializes_compactly() {
        let v = obj(&[
            ("execute", Value::from("qom-set")),
            (
                "arguments",
                obj(&[
                    ("path", Value::from("/machine/peripheral/vm0")),
                    ("value", Value::from(u64::MAX)),
                    ("neg", Value::from(-5i64)),
                    ("f", Value::Number(Number::Float(0.25))),
                    ("nan", Value::Number(Number::Float(f64::NAN))),
                    ("list", Value::Array(vec![Value::Null, Value::Bool(false)])),
                    ("empty", obj(&[])),
                ]),
            ),
            ("id", Value::from("a\"b\\c\n\u{1}\u{e9}")),
        ]);
        assert_eq!(
            v.to_string(),
            r#"{"execute":"qom-set","arguments":{"path":"/machine/peripheral/vm0","value":18446744073709551615,"neg":-5,"f":0.25,"nan":null,"list":[null,false],"empty":{}},"id":"a\"b\\c\n\u0001é"}"#
        );
    }

    #[test]
    fn serialization_round_trips() {
        let text = r#"{"a":[1,-2,3.5,"x\ty",{"b":[]},null,true],"big":18446744073709551615,"u":"\u0000\u001f\u007f€"}"#;
        let v = parse(text).unwrap();
        assert_eq!(parse(&v.to_string()).unwrap(), v);
        assert_eq!(parse(&v.to_pretty_string()).unwrap(), v);
        assert_eq!(v.to_string(), text);
    }

    #[test]
    fn pretty_printing() {
        let v = parse(r#"{"a":[1,{}],"b":[]}"#).unwrap();
        assert_eq!(
            v.to_pretty_string(),
            "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"b\": []\n}"
        );
    }

    #[test]
    fn set_replaces_or_appends() {
        let mut v = obj(&[("a", Value::from(1u64))]);
        v.set("a", Value::from(2u64));
        v.set("b", Value::Null);
        assert_eq!(v.to_string(), r#"{"a":2,"b":null}"#);
    }
}
