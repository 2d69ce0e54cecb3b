//! The RESP request parser: RESP2 multibulk requests and inline commands, incremental over a
//! connection's read buffer, with Redis's exact `Protocol error` texts.
//!
//! The parser never copies a multibulk argument: it records byte ranges into the caller's buffer
//! and [`Parser::args`] hands out slices. Its state survives across reads, so a request split
//! over any number of reads parses exactly as if it had arrived at once, without rescanning the
//! bytes it has already seen. Behaviour follows Redis 7's `processMultibulkBuffer` and
//! `processInlineBuffer` (networking.c), including what it does *not* check (the `\r\n` after a
//! bulk argument is skipped unchecked).
//!
//! ```
//! use segkv_server::resp::{Parser, Parsed};
//! let mut p = Parser::default();
//! let buf = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n";
//! assert_eq!(p.next(buf, 512 << 20), Ok(Parsed::Command));
//! assert_eq!(p.args(buf), vec![&b"GET"[..], &b"k"[..]]);
//! p.consume();
//! assert_eq!(p.next(buf, 512 << 20), Ok(Parsed::Command));
//! assert_eq!(p.args(buf), vec![&b"PING"[..]]);
//! ```

/// Longest inline request or length line Redis accepts without a newline (`PROTO_INLINE_MAX_SIZE`).
pub const INLINE_MAX: usize = 64 * 1024;

/// What one call to [`Parser::next`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A whole command; read it with [`Parser::args`], then call [`Parser::consume`].
    Command,
    /// An empty request (`*0`, `*-1`, an empty inline line): nothing to run; call `consume`.
    Empty,
    /// More bytes are needed.
    Incomplete,
}

/// A malformed request. The text is Redis's reply (without `-ERR `); the connection must be
/// closed after replying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Kind {
    #[default]
    Unknown,
    Multibulk,
    Inline,
}

/// Incremental request parser. Offsets are into the caller's buffer, which may grow between
/// calls and may be compacted with [`Parser::compact`].
#[derive(Debug, Default)]
pub struct Parser {
    /// Start of the command being parsed.
    start: usize,
    /// Next unparsed byte.
    pos: usize,
    kind: Kind,
    /// Arguments still to read (multibulk).
    left: u64,
    /// Length of the bulk argument being read, once its header is parsed.
    bulk: Option<usize>,
    /// Ranges of the arguments read so far, relative to `start`.
    ranges: Vec<(usize, usize)>,
    /// Arguments of an inline command (unquoted, so owned).
    inline: Vec<Vec<u8>>,
    /// A whole command was returned and not yet consumed.
    ready: bool,
}

/// Redis's `string2ll`: optional '-', no '+', no leading zeros, no spaces, fits in i64.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (neg, digits) = if s[0] == b'-' {
        (true, &s[1..])
    } else {
        (false, s)
    };
    if digits.is_empty() || !(b'1'..=b'9').contains(&digits[0]) {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    if neg {
        if v > i64::MAX as u64 + 1 {
            return None;
        }
        Some((v as i128).wrapping_neg() as i64)
    } else {
        i64::try_from(v).ok()
    }
}

fn find(buf: &[u8], from: usize, byte: u8) -> Option<usize> {
    buf[from..]
        .iter()
        .position(|&b| b == byte)
        .map(|i| from + i)
}

impl Parser {
    /// Parses the next request from `buf[self.pos..]`.
    pub fn next(&mut self, buf: &[u8], max_bulk: u64) -> Result<Parsed, ProtocolError> {
        if self.ready {
            return Ok(Parsed::Command);
        }
        let r = self.next_inner(buf, max_bulk);
        self.ready = r == Ok(Parsed::Command);
        r
    }

    fn next_inner(&mut self, buf: &[u8], max_bulk: u64) -> Result<Parsed, ProtocolError> {
        if self.kind == Kind::Unknown {
            if self.pos >= buf.len() {
                return Ok(Parsed::Incomplete);
            }
            self.kind = if buf[self.start] == b'*' {
                Kind::Multibulk
            } else {
                Kind::Inline
            };
        }
        match self.kind {
            Kind::Inline => self.inline(buf),
            _ => self.multibulk(buf, max_bulk),
        }
    }

    fn inline(&mut self, buf: &[u8]) -> Result<Parsed, ProtocolError> {
        let Some(nl) = find(buf, self.pos, b'\n') else {
            self.pos = buf.len();
            if buf.len() - self.start > INLINE_MAX {
                return Err(ProtocolError(
                    "Protocol error: too big inline request".into(),
                ));
            }
            return Ok(Parsed::Incomplete);
        };
        let mut end = nl;
        if end > self.start && buf[end - 1] == b'\r' {
            end -= 1;
        }
        let line = &buf[self.start..end];
        // The C code works on a NUL-terminated copy of the line.
        let line = match line.iter().position(|&b| b == 0) {
            Some(z) => &line[..z],
            None => line,
        };
        self.pos = nl + 1;
        match split_args(line) {
            Some(args) => {
                self.inline = args;
                Ok(if self.inline.is_empty() {
                    Parsed::Empty
                } else {
                    Parsed::Command
                })
            }
            None => Err(ProtocolError(
                "Protocol error: unbalanced quotes in request".into(),
            )),
        }
    }

    /// Finds a length line starting at `self.pos`: returns the index of its '\r' once the byte
    /// after it has arrived too.
    fn length_line(&self, buf: &[u8], too_big: &str) -> Result<Option<usize>, ProtocolError> {
        match find(buf, self.pos, b'\r') {
            None => {
                if buf.len() - self.pos > INLINE_MAX {
                    return Err(ProtocolError(format!("Protocol error: {too_big}")));
                }
                Ok(None)
            }
            Some(cr) if cr + 2 > buf.len() => Ok(None),
            Some(cr) => Ok(Some(cr)),
        }
    }

    fn multibulk(&mut self, buf: &[u8], max_bulk: u64) -> Result<Parsed, ProtocolError> {
        if self.left == 0 {
            let Some(cr) = self.length_line(buf, "too big mbulk count string")? else {
                return Ok(Parsed::Incomplete);
            };
            let n = match parse_i64(&buf[self.pos + 1..cr]) {
                Some(n) if n <= i32::MAX as i64 => n,
                _ => {
                    return Err(ProtocolError(
                        "Protocol error: invalid multibulk length".into(),
                    ));
                }
            };
            self.pos = cr + 2;
            if n <= 0 {
                return Ok(Parsed::Empty);
            }
            self.left = n as u64;
            self.ranges.clear();
            self.ranges.reserve((n as usize).min(1024));
        }
        while self.left > 0 {
            let len = match self.bulk {
                Some(len) => len,
                None => {
                    let Some(cr) = self.length_line(buf, "too big bulk count string")? else {
                        return Ok(Parsed::Incomplete);
                    };
                    if buf[self.pos] != b'$' {
                        return Err(ProtocolError(format!(
                            "Protocol error: expected '$', got '{}'",
                            buf[self.pos] as char
                        )));
                    }
                    let len = match parse_i64(&buf[self.pos + 1..cr]) {
                        Some(n) if n >= 0 && n as u64 <= max_bulk => n as usize,
                        _ => {
                            return Err(ProtocolError(
                                "Protocol error: invalid bulk length".into(),
                            ));
                        }
                    };
                    self.pos = cr + 2;
                    self.bulk = Some(len);
                    len
                }
            };
            if buf.len() - self.pos < len + 2 {
                return Ok(Parsed::Incomplete);
            }
            self.ranges.push((self.pos - self.start, len));
            self.pos += len + 2;
            self.bulk = None;
            self.left -= 1;
        }
        Ok(Parsed::Command)
    }

    /// Bytes the caller should make room for: the rest of a bulk argument being read.
    pub fn wanted(&self, buf_len: usize) -> usize {
        match self.bulk {
            Some(len) => (self.pos + len + 2).saturating_sub(buf_len),
            None => 0,
        }
    }

    /// The arguments of the command just parsed.
    pub fn args<'a>(&'a self, buf: &'a [u8]) -> Vec<&'a [u8]> {
        if self.kind == Kind::Inline {
            self.inline.iter().map(|a| a.as_slice()).collect()
        } else {
            self.ranges
                .iter()
                .map(|&(off, len)| &buf[self.start + off..self.start + off + len])
                .collect()
        }
    }

    /// Number of arguments of the command just parsed.
    pub fn argc(&self) -> usize {
        if self.kind == Kind::Inline {
            self.inline.len()
        } else {
            self.ranges.len()
        }
    }

    /// Whether the command just parsed was an inline command.
    pub fn is_inline(&self) -> bool {
        self.kind == Kind::Inline
    }

    /// Marks the command just parsed (or the empty request) as done; parsing continues after it.
    pub fn consume(&mut self) {
        self.ready = false;
        self.start = self.pos;
        self.kind = Kind::Unknown;
        self.left = 0;
        self.bulk = None;
        self.ranges.clear();
        self.inline.clear();
    }

    /// Offset of the first byte not yet consumed.
    pub fn start(&self) -> usize {
        self.start
    }

    /// Removes consumed bytes from the front of `buf`.
    pub fn compact(&mut self, buf: &mut Vec<u8>) {
        if self.start > 0 {
            buf.drain(..self.start);
            self.pos -= self.start;
            self.start = 0;
        }
    }

    /// Shifts every offset down by `n` (the caller dropped `n` consumed bytes from its buffer).
    pub fn rebase(&mut self, n: usize) {
        self.start -= n;
        self.pos -= n;
    }

    /// Whether part of a request is buffered (so the buffer can't simply be dropped).
    pub fn in_request(&self, buf_len: usize) -> bool {
        buf_len > self.start
    }
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Redis's `sdssplitargs`: splits an inline request into arguments, with "double quotes"
/// (escapes \n \r \t \b \a \xHH), 'single quotes' (escape \') and a closing quote that must be
/// followed by a space. `None` for unbalanced quotes.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut args = Vec::new();
    let mut p = 0;
    loop {
        while at(p) != 0 && is_space(at(p)) {
            p += 1;
        }
        if at(p) == 0 {
            return Some(args);
        }
        let (mut inq, mut insq, mut done) = (false, false, false);
        let mut cur = Vec::new();
        while !done {
            let c = at(p);
            if inq {
                if c == b'\\'
                    && at(p + 1) == b'x'
                    && hex(at(p + 2)).is_some()
                    && hex(at(p + 3)).is_some()
                {
                    cur.push(hex(at(p + 2))? * 16 + hex(at(p + 3))?);
                    p += 3;
                } else if c == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    cur.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        o => o,
                    });
                } else if c == b'"' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return None;
                    }
                    done = true;
                } else if c == 0 {
                    return None;
                } else {
                    cur.push(c);
                }
            } else if insq {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    cur.push(b'\'');
                } else if c == b'\'' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return None;
                    }
                    done = true;
                } else if c == 0 {
                    return None;
                } else {
                    cur.push(c);
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                    b'"' => inq = true,
                    b'\'' => insq = true,
                    _ => cur.push(c),
                }
            }
            if at(p) != 0 {
                p += 1;
            }
        }
        args.push(cur);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: u64 = 512 << 20;

    /// Parses a whole stream fed in the given chunks, the way a connection does.
    fn parse_chunks(chunks: &[&[u8]]) -> (Vec<Vec<Vec<u8>>>, Option<ProtocolError>) {
        let mut p = Parser::default();
        let mut buf = Vec::new();
        let mut cmds = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            loop {
                match p.next(&buf, MAX) {
                    Ok(Parsed::Command) => {
                        cmds.push(p.args(&buf).iter().map(|a| a.to_vec()).collect());
                        p.consume();
                    }
                    Ok(Parsed::Empty) => p.consume(),
                    Ok(Parsed::Incomplete) => break,
                    Err(e) => return (cmds, Some(e)),
                }
            }
            p.compact(&mut buf);
        }
        (cmds, None)
    }

    fn v(args: &[&str]) -> Vec<Vec<u8>> {
        args.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn multibulk_and_inline_mix() {
        let (cmds, err) =
            parse_chunks(&[b"*1\r\n$4\r\nPING\r\nSET a \"b c\"\r\nGET x\n\r\n*0\r\n"]);
        assert_eq!(err, None);
        assert_eq!(
            cmds,
            vec![v(&["PING"]), v(&["SET", "a", "b c"]), v(&["GET", "x"])]
        );
    }

    #[test]
    fn binary_bulk_arguments_are_kept_whole() {
        let (cmds, _) = parse_chunks(&[b"*2\r\n$3\r\na\r\n\r\n$0\r\n\r\n"]);
        assert_eq!(cmds, vec![vec![b"a\r\n".to_vec(), vec![]]]);
    }

    #[test]
    fn protocol_errors_have_redis_texts() {
        let err = |s: &[u8]| parse_chunks(&[s]).1.map(|e| e.0);
        assert_eq!(
            err(b"*abc\r\n").as_deref(),
            Some("Protocol error: invalid multibulk length")
        );
        assert_eq!(
            err(b"*3000000000\r\n").as_deref(),
            Some("Protocol error: invalid multibulk length")
        );
        assert_eq!(
            err(b"*1\r\nfoo\r\n").as_deref(),
            Some("Protocol error: expected '$', got 'f'")
        );
        assert_eq!(
            err(b"*1\r\n$-1\r\n").as_deref(),
            Some("Protocol error: invalid bulk length")
        );
        assert_eq!(
            err(b"*1\r\n$01\r\n").as_deref(),
            Some("Protocol error: invalid bulk length")
        );
        assert_eq!(
            err(b"SET \"a\r\n").as_deref(),
            Some("Protocol error: unbalanced quotes in request")
        );
        assert_eq!(
            err(b"SET \"a\"b\r\n").as_deref(),
            Some("Protocol error: unbalanced quotes in request")
        );
        let big = vec![b'a'; INLINE_MAX + 1];
        assert_eq!(
            err(&big).as_deref(),
            Some("Protocol error: too big inline request")
        );
        let mut big = b"*".to_vec();
        big.extend(std::iter::repeat_n(b'1', INLINE_MAX + 1));
        assert_eq!(
            err(&big).as_deref(),
            Some("Protocol error: too big mbulk count string")
        );
        let mut big = b"*1\r\n$".to_vec();
        big.extend(std::iter::repeat_n(b'1', INLINE_MAX + 1));
        assert_eq!(
            err(&big).as_deref(),
            Some("Protocol error: too big bulk count string")
        );
    }

    #[test]
    fn an_unconsumed_command_is_returned_again() {
        let mut p = Parser::default();
        let buf = b"*1\r\n$3\r\nSET\r\n*1\r\n$3\r\nGET\r\n";
        assert_eq!(p.next(buf, MAX), Ok(Parsed::Command));
        assert_eq!(p.next(buf, MAX), Ok(Parsed::Command));
        assert_eq!(p.args(buf), vec![&b"SET"[..]]);
        p.consume();
        assert_eq!(p.next(buf, MAX), Ok(Parsed::Command));
        assert_eq!(p.args(buf), vec![&b"GET"[..]]);
    }

    #[test]
    fn bulk_length_limit_is_configurable() {
        let mut p = Parser::default();
        assert_eq!(
            p.next(b"*1\r\n$11\r\n", 10),
            Err(ProtocolError("Protocol error: invalid bulk length".into()))
        );
    }

    #[test]
    fn empty_and_negative_counts_are_skipped() {
        let (cmds, err) = parse_chunks(&[b"*0\r\n*-1\r\n\r\n   \r\n*1\r\n$1\r\nx\r\n"]);
        assert_eq!(err, None);
        assert_eq!(cmds, vec![v(&["x"])]);
    }

    #[test]
    fn split_args_follows_sdssplitargs() {
        assert_eq!(split_args(b"  a  b\tc "), Some(v(&["a", "b", "c"])));
        assert_eq!(
            split_args(b"\"\\x41\\n\" 'it\\'s'"),
            Some(vec![b"A\n".to_vec(), b"it's".to_vec()])
        );
        assert_eq!(split_args(b"\"\""), Some(vec![vec![]]));
        assert_eq!(split_args(b"'abc"), None);
        assert_eq!(split_args(b"a\"b c\""), Some(v(&["ab c"])));
    }

    #[test]
    fn string2ll_rules() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"+1"), None);
        assert_eq!(parse_i64(b"01"), None);
        assert_eq!(parse_i64(b"-0"), None);
        assert_eq!(parse_i64(b" 1"), None);
        assert_eq!(parse_i64(b""), None);
    }

    fn encode(cmds: &[Vec<Vec<u8>>]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in cmds {
            out.extend_from_slice(format!("*{}\r\n", c.len()).as_bytes());
            for a in c {
                out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                out.extend_from_slice(a);
                out.extend_from_slice(b"\r\n");
            }
        }
        out
    }

    proptest! {
        #[test]
        fn any_split_of_a_valid_stream_parses_identically(
            cmds in prop::collection::vec(prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 1..5), 1..8),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let stream = encode(&cmds);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            points.sort();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(&stream[last..p]);
                last = p;
            }
            chunks.push(&stream[last..]);
            let (got, err) = parse_chunks(&chunks);
            prop_assert_eq!(err, None);
            prop_assert_eq!(got, cmds);
        }

        #[test]
        fn any_split_of_inline_requests_parses_identically(
            words in prop::collection::vec("[a-z0-9]{1,6}( [a-z0-9]{1,6}){0,3}", 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let stream: Vec<u8> = words.iter().flat_map(|w| format!("{w}\r\n").into_bytes()).collect();
            let at = cut.index(stream.len() + 1);
            let (whole, _) = parse_chunks(&[&stream]);
            let (split, _) = parse_chunks(&[&stream[..at], &stream[at..]]);
            prop_assert_eq!(whole.len(), words.len());
            prop_assert_eq!(split, whole);
        }
    }
}
