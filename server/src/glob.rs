//! Redis's glob matcher (`stringmatchlen` in util.c), byte for byte: `*`, `?`, `[abc]`, `[^a]`,
//! `[a-z]` (reversed ranges allowed), `\` escapes, and the same quirks (a `[` class left open
//! matches as if closed; bytes compare as C's signed `char`).
//!
//! ```
//! use segkv_server::glob::matches;
//! assert!(matches(b"user:*", b"user:42", false));
//! assert!(matches(b"h[^e]llo", b"hallo", false));
//! assert!(!matches(b"h[^e]llo", b"hello", false));
//! ```

/// Whether `string` matches `pattern` (case-insensitively with `nocase`).
pub fn matches(pattern: &[u8], string: &[u8], nocase: bool) -> bool {
    let mut skip = false;
    imp(pattern, string, nocase, &mut skip)
}

fn lower(c: u8) -> u8 {
    c.to_ascii_lowercase()
}

fn imp(pat: &[u8], s: &[u8], nocase: bool, skip_longer: &mut bool) -> bool {
    // Past the end reads as the C string's NUL terminator.
    let at = |b: &[u8], i: usize| b.get(i).copied().unwrap_or(0);
    let (mut p, mut si) = (0usize, 0usize);
    // Remaining pattern length, signed as in C.
    let mut plen = pat.len() as isize;
    let mut slen = s.len() as isize;
    while plen > 0 && slen > 0 {
        match at(pat, p) {
            b'*' => {
                while plen > 0 && at(pat, p + 1) == b'*' {
                    p += 1;
                    plen -= 1;
                }
                if plen == 1 {
                    return true;
                }
                while slen > 0 {
                    if imp(&pat[p + 1..], &s[si..], nocase, skip_longer) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    si += 1;
                    slen -= 1;
                }
                *skip_longer = true;
                return false;
            }
            b'?' => {
                si += 1;
                slen -= 1;
            }
            b'[' => {
                p += 1;
                plen -= 1;
                let not = at(pat, p) == b'^';
                if not {
                    p += 1;
                    plen -= 1;
                }
                let mut hit = false;
                let c0 = at(s, si);
                loop {
                    let pc = at(pat, p);
                    if pc == b'\\' && plen >= 2 {
                        p += 1;
                        plen -= 1;
                        if at(pat, p) == c0 {
                            hit = true;
                        }
                    } else if pc == b']' {
                        break;
                    } else if plen == 0 {
                        p -= 1;
                        plen += 1;
                        break;
                    } else if plen >= 3 && at(pat, p + 1) == b'-' {
                        // C compares signed chars.
                        let (mut start, mut end, mut c) = (
                            pc as i8 as i32,
                            at(pat, p + 2) as i8 as i32,
                            c0 as i8 as i32,
                        );
                        if start > end {
                            std::mem::swap(&mut start, &mut end);
                        }
                        if nocase {
                            start = lower(start as u8) as i8 as i32;
                            end = lower(end as u8) as i8 as i32;
                            c = lower(c as u8) as i8 as i32;
                        }
                        p += 2;
                        plen -= 2;
                        if c >= start && c <= end {
                            hit = true;
                        }
                    } else if (!nocase && pc == c0) || (nocase && lower(pc) == lower(c0)) {
                        hit = true;
                    }
                    p += 1;
                    plen -= 1;
                }
                if not {
                    hit = !hit;
                }
                if !hit {
                    return false;
                }
                si += 1;
                slen -= 1;
            }
            c => {
                let mut pc = c;
                if c == b'\\' && plen >= 2 {
                    p += 1;
                    plen -= 1;
                    pc = at(pat, p);
                }
                let sc = at(s, si);
                if (!nocase && pc != sc) || (nocase && lower(pc) != lower(sc)) {
                    return false;
                }
                si += 1;
                slen -= 1;
            }
        }
        p += 1;
        plen -= 1;
        if slen == 0 {
            while at(pat, p) == b'*' {
                p += 1;
                plen -= 1;
            }
            break;
        }
    }
    plen == 0 && slen == 0
}

#[cfg(test)]
mod tests {
    use super::matches;

    fn m(p: &str, s: &str) -> bool {
        matches(p.as_bytes(), s.as_bytes(), false)
    }

    #[test]
    fn stars_and_questions() {
        assert!(
            !m("*", ""),
            "as in C: KEYS and SCAN special-case a lone '*'"
        );
        assert!(m("*", "anything"));
        assert!(m("a*", "a"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("h?llo", "hello"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("**a**", "bab"));
        assert!(!m("", "a"));
        assert!(m("", ""));
        assert!(!m("?", ""));
    }

    #[test]
    fn classes_ranges_and_negation() {
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hbllo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(m("h[b-a]llo", "hallo"), "reversed ranges are swapped");
        assert!(!m("h[a-b]llo", "hcllo"));
        assert!(m("[\\]]", "]"));
        assert!(m("a[bc", "ab"), "an unclosed class matches as if closed");
        assert!(!m("a[", "ab"));
    }

    #[test]
    fn escapes_and_nocase() {
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "aXb"));
        assert!(m("a\\", "a\\"));
        assert!(matches(b"HELLO*", b"hello world", true));
        assert!(matches(b"[A-C]x", b"bx", true));
        assert!(!matches(b"HELLO*", b"hello world", false));
    }

    #[test]
    fn high_bytes_compare_signed_like_c() {
        // In C, '\x80' as signed char is below 'a', so [a-\x80] is the range [-128, 'a'].
        assert!(matches(b"[a-\x80]", b"A", false));
        assert!(matches(b"[a-\x80]", b"\x90", false));
        assert!(!matches(b"[a-\x80]", b"b", false));
    }

    #[test]
    fn pathological_pattern_ends_quickly() {
        let p = "a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b";
        let s = "a".repeat(60);
        assert!(!m(p, &s));
    }
}
