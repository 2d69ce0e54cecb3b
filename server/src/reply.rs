//! Reply values and their RESP2 / RESP3 encodings.
//!
//! Handlers return a [`Reply`]; the connection encodes it for the protocol the client chose
//! with `HELLO`. RESP3-only types degrade as Redis degrades them in RESP2 (maps become flat
//! arrays, sets arrays, null `$-1` or `*-1`, verbatim strings bulk strings, booleans integers).

use std::borrow::Cow;

use crate::cmd::meta_types::M;

/// A reply to one command.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+text`
    Status(Cow<'static, str>),
    /// `-text`; the text starts with the error code, e.g. `ERR syntax error`.
    Error(Cow<'static, str>),
    Int(i64),
    Bulk(Vec<u8>),
    /// Null bulk string (`$-1`, RESP3 `_`).
    Nil,
    /// Null array (`*-1`, RESP3 `_`).
    NilArray,
    Array(Vec<Reply>),
    Map(Vec<(Reply, Reply)>),
    Set(Vec<Reply>),
    Double(f64),
    Bool(bool),
    /// Text shown as-is (`=` with `txt:` in RESP3, bulk in RESP2).
    Verbatim(String),
    /// Static command metadata (COMMAND INFO / DOCS).
    Meta(&'static M),
    /// Nothing is sent (SHUTDOWN, CLIENT REPLY OFF).
    None,
}

impl Reply {
    pub const OK: Reply = Reply::Status(Cow::Borrowed("OK"));

    pub fn err(text: &'static str) -> Reply {
        Reply::Error(Cow::Borrowed(text))
    }

    pub fn error(text: String) -> Reply {
        Reply::Error(Cow::Owned(text))
    }

    pub fn status(text: &'static str) -> Reply {
        Reply::Status(Cow::Borrowed(text))
    }

    pub fn bulk(b: impl Into<Vec<u8>>) -> Reply {
        Reply::Bulk(b.into())
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Appends the encoding for protocol `proto` (2 or 3) to `out`.
    pub fn encode(&self, proto: u8, out: &mut Vec<u8>) {
        match self {
            Reply::Status(s) => {
                out.push(b'+');
                out.extend_from_slice(s.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Error(s) => {
                out.push(b'-');
                // As addReplyErrorLength: no newline may reach the wire.
                out.extend(
                    s.bytes()
                        .map(|c| if c == b'\r' || c == b'\n' { b' ' } else { c }),
                );
                out.extend_from_slice(b"\r\n");
            }
            Reply::Int(i) => header(out, b':', *i),
            Reply::Bulk(b) => bulk(out, b),
            Reply::Nil => out.extend_from_slice(if proto >= 3 { b"_\r\n" } else { b"$-1\r\n" }),
            Reply::NilArray => {
                out.extend_from_slice(if proto >= 3 { b"_\r\n" } else { b"*-1\r\n" })
            }
            Reply::Array(items) => {
                header(out, b'*', items.len() as i64);
                for i in items {
                    i.encode(proto, out);
                }
            }
            Reply::Set(items) => {
                header(
                    out,
                    if proto >= 3 { b'~' } else { b'*' },
                    items.len() as i64,
                );
                for i in items {
                    i.encode(proto, out);
                }
            }
            Reply::Map(pairs) => {
                if proto >= 3 {
                    header(out, b'%', pairs.len() as i64);
                } else {
                    header(out, b'*', 2 * pairs.len() as i64);
                }
                for (k, v) in pairs {
                    k.encode(proto, out);
                    v.encode(proto, out);
                }
            }
            Reply::Double(d) => {
                let s = format_double(*d);
                if proto >= 3 {
                    out.push(b',');
                    out.extend_from_slice(s.as_bytes());
                    out.extend_from_slice(b"\r\n");
                } else {
                    bulk(out, s.as_bytes());
                }
            }
            Reply::Bool(b) => {
                if proto >= 3 {
                    out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" });
                } else {
                    header(out, b':', *b as i64);
                }
            }
            Reply::Verbatim(s) => {
                if proto >= 3 {
                    header(out, b'=', s.len() as i64 + 4);
                    out.extend_from_slice(b"txt:");
                    out.extend_from_slice(s.as_bytes());
                    out.extend_from_slice(b"\r\n");
                } else {
                    bulk(out, s.as_bytes());
                }
            }
            Reply::Meta(m) => encode_meta(m, proto, out),
            Reply::None => {}
        }
    }
}

fn encode_meta(m: &M, proto: u8, out: &mut Vec<u8>) {
    match m {
        M::Status(s) => {
            out.push(b'+');
            out.extend_from_slice(s.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        M::Str(s) => bulk(out, s.as_bytes()),
        M::Int(i) => header(out, b':', *i),
        M::Null => out.extend_from_slice(if proto >= 3 { b"_\r\n" } else { b"$-1\r\n" }),
        M::Arr(items) | M::Set(items) | M::Map(items) => {
            let t = match (m, proto >= 3) {
                (M::Set(_), true) => b'~',
                (M::Map(_), true) => b'%',
                _ => b'*',
            };
            let n = if matches!(m, M::Map(_)) && proto >= 3 {
                items.len() / 2
            } else {
                items.len()
            };
            header(out, t, n as i64);
            for i in *items {
                encode_meta(i, proto, out);
            }
        }
    }
}

/// `%.17g` as Redis prints doubles, with `inf` / `-inf` / `nan`.
pub fn format_double(d: f64) -> String {
    if d.is_nan() {
        return "nan".into();
    }
    if d.is_infinite() {
        return if d > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // Shortest representation that round-trips, then printf-like exponent style.
    let s = format!("{d:e}");
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-5..17).contains(&exp) {
        format!("{d}")
    } else {
        format!("{mant}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    }
}

/// Writes `<t><n>\r\n`.
pub fn header(out: &mut Vec<u8>, t: u8, n: i64) {
    out.push(t);
    write_int(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Writes `$<len>\r\n<bytes>\r\n`.
pub fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    header(out, b'$', b.len() as i64);
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

/// Appends the decimal text of `n`.
pub fn write_int(out: &mut Vec<u8>, n: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let neg = n < 0;
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if neg {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(r: &Reply, proto: u8) -> String {
        let mut out = Vec::new();
        r.encode(proto, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn resp2_and_resp3_encodings() {
        assert_eq!(enc(&Reply::OK, 2), "+OK\r\n");
        assert_eq!(enc(&Reply::Int(-42), 2), ":-42\r\n");
        assert_eq!(enc(&Reply::Int(i64::MIN), 2), ":-9223372036854775808\r\n");
        assert_eq!(enc(&Reply::Nil, 2), "$-1\r\n");
        assert_eq!(enc(&Reply::Nil, 3), "_\r\n");
        assert_eq!(enc(&Reply::NilArray, 2), "*-1\r\n");
        let m = Reply::Map(vec![(Reply::bulk("a"), Reply::Int(1))]);
        assert_eq!(enc(&m, 2), "*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(&m, 3), "%1\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(&Reply::Verbatim("hi".into()), 3), "=6\r\ntxt:hi\r\n");
        assert_eq!(enc(&Reply::error("ERR a\r\nb".into()), 2), "-ERR a  b\r\n");
        assert_eq!(enc(&Reply::Double(1.5), 3), ",1.5\r\n");
    }

    #[test]
    fn doubles_print_like_percent_17g() {
        assert_eq!(format_double(3.0), "3");
        assert_eq!(format_double(0.1), "0.1");
        assert_eq!(format_double(1e20), "1e+20");
        assert_eq!(format_double(f64::INFINITY), "inf");
    }
}
