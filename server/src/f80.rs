//! The x87 80-bit `long double` arithmetic Redis uses for INCRBYFLOAT, emulated exactly in safe
//! Rust: `strtold` (correctly rounded decimal to a 64-bit mantissa), addition with round to
//! nearest even, and `printf("%.17Lf")` (exact binary to decimal) followed by Redis's trimming
//! of trailing zeros. That is what makes `SET k 12345.6; INCRBYFLOAT k 0.1` answer Redis's
//! `12345.69999999999999929`, not an f64's digits.
//!
//! ```
//! use segkv_server::f80::incr_by_float;
//! assert_eq!(incr_by_float(b"12345.6", b"0.1").unwrap(), "12345.69999999999999929");
//! assert_eq!(incr_by_float(b"0.1", b"0.2").unwrap(), "0.3");
//! ```

use std::cmp::Ordering;

/// An unsigned big integer, little-endian 32-bit limbs, no high zero limbs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Big(Vec<u32>);

impl Big {
    fn from_u64(v: u64) -> Big {
        let mut b = Big(vec![v as u32, (v >> 32) as u32]);
        b.trim();
        b
    }

    fn trim(&mut self) {
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
    }

    fn is_zero(&self) -> bool {
        self.0.is_empty()
    }

    fn bits(&self) -> u64 {
        match self.0.last() {
            None => 0,
            Some(&top) => (self.0.len() as u64 - 1) * 32 + (32 - top.leading_zeros() as u64),
        }
    }

    fn bit(&self, i: u64) -> bool {
        let limb = (i / 32) as usize;
        limb < self.0.len() && (self.0[limb] >> (i % 32)) & 1 == 1
    }

    /// Whether any bit below bit `n` is set.
    fn any_below(&self, n: u64) -> bool {
        let full = (n / 32) as usize;
        if self.0.iter().take(full).any(|&l| l != 0) {
            return true;
        }
        let rem = n % 32;
        rem > 0 && full < self.0.len() && self.0[full] & ((1u32 << rem) - 1) != 0
    }

    fn mul_small(&mut self, m: u32) {
        let mut carry = 0u64;
        for l in self.0.iter_mut() {
            let v = *l as u64 * m as u64 + carry;
            *l = v as u32;
            carry = v >> 32;
        }
        if carry > 0 {
            self.0.push(carry as u32);
        }
    }

    fn add_small(&mut self, a: u32) {
        let mut carry = a as u64;
        for l in self.0.iter_mut() {
            if carry == 0 {
                return;
            }
            let v = *l as u64 + carry;
            *l = v as u32;
            carry = v >> 32;
        }
        if carry > 0 {
            self.0.push(carry as u32);
        }
    }

    /// Divides in place by `d`, returning the remainder.
    fn div_small(&mut self, d: u32) -> u32 {
        let mut rem = 0u64;
        for l in self.0.iter_mut().rev() {
            let cur = (rem << 32) | *l as u64;
            *l = (cur / d as u64) as u32;
            rem = cur % d as u64;
        }
        self.trim();
        rem as u32
    }

    fn shl(&self, n: u64) -> Big {
        if self.is_zero() {
            return self.clone();
        }
        let (limbs, bits) = ((n / 32) as usize, (n % 32) as u32);
        let mut out = vec![0u32; limbs];
        let mut carry = 0u32;
        for &l in &self.0 {
            out.push(if bits == 0 { l } else { (l << bits) | carry });
            carry = if bits == 0 { 0 } else { l >> (32 - bits) };
        }
        if carry > 0 {
            out.push(carry);
        }
        let mut b = Big(out);
        b.trim();
        b
    }

    fn shr(&self, n: u64) -> Big {
        let (limbs, bits) = ((n / 32) as usize, (n % 32) as u32);
        if limbs >= self.0.len() {
            return Big(Vec::new());
        }
        let src = &self.0[limbs..];
        let mut out = Vec::with_capacity(src.len());
        for i in 0..src.len() {
            let hi = if bits == 0 {
                0
            } else {
                src.get(i + 1).map(|&h| h << (32 - bits)).unwrap_or(0)
            };
            out.push((src[i] >> bits) | hi);
        }
        let mut b = Big(out);
        b.trim();
        b
    }

    fn cmp(&self, o: &Big) -> Ordering {
        self.0
            .len()
            .cmp(&o.0.len())
            .then_with(|| self.0.iter().rev().cmp(o.0.iter().rev()))
    }

    fn add(&self, o: &Big) -> Big {
        let mut out = Vec::with_capacity(self.0.len().max(o.0.len()) + 1);
        let mut carry = 0u64;
        for i in 0..self.0.len().max(o.0.len()) {
            let v = *self.0.get(i).unwrap_or(&0) as u64 + *o.0.get(i).unwrap_or(&0) as u64 + carry;
            out.push(v as u32);
            carry = v >> 32;
        }
        if carry > 0 {
            out.push(carry as u32);
        }
        Big(out)
    }

    /// `self - o`, with `self >= o`.
    fn sub(&self, o: &Big) -> Big {
        let mut out = Vec::with_capacity(self.0.len());
        let mut borrow = 0i64;
        for i in 0..self.0.len() {
            let mut v = self.0[i] as i64 - *o.0.get(i).unwrap_or(&0) as i64 - borrow;
            borrow = if v < 0 {
                v += 1 << 32;
                1
            } else {
                0
            };
            out.push(v as u32);
        }
        let mut b = Big(out);
        b.trim();
        b
    }

    /// Quotient and remainder (binary long division).
    fn divmod(&self, d: &Big) -> (Big, Big) {
        let mut q = Big(vec![0; self.0.len()]);
        let mut r = Big(Vec::new());
        for i in (0..self.bits()).rev() {
            r = r.shl(1);
            if self.bit(i) {
                r.add_small(1);
            }
            if r.cmp(d) != Ordering::Less {
                r = r.sub(d);
                q.0[(i / 32) as usize] |= 1 << (i % 32);
            }
        }
        q.trim();
        (q, r)
    }

    fn to_u64(&self) -> u64 {
        *self.0.first().unwrap_or(&0) as u64 | (*self.0.get(1).unwrap_or(&0) as u64) << 32
    }

    fn pow10(k: u32) -> Big {
        let mut b = Big::from_u64(1);
        for _ in 0..k {
            b.mul_small(10);
        }
        b
    }

    fn to_decimal(&self) -> String {
        if self.is_zero() {
            return "0".into();
        }
        let mut n = self.clone();
        let mut chunks = Vec::new();
        while !n.is_zero() {
            chunks.push(n.div_small(1_000_000_000));
        }
        let mut s = chunks.pop().unwrap_or(0).to_string();
        for c in chunks.iter().rev() {
            s.push_str(&format!("{c:09}"));
        }
        s
    }
}

/// A long double: zero, infinity, or `mant * 2^exp` with the top bit of `mant` set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum F80 {
    Zero { neg: bool },
    Finite { neg: bool, mant: u64, exp: i64 },
    Inf { neg: bool },
}

/// Largest and smallest binary exponents of a normal long double's leading bit.
const MAX_EXP: i64 = 16383;
const MIN_EXP: i64 = -16382;

/// Rounds `n * 2^exp` (plus a nonzero tail below it when `sticky`) to a 64-bit mantissa,
/// nearest even.
fn round(neg: bool, n: &Big, mut exp: i64, sticky: bool) -> F80 {
    let len = n.bits();
    if len == 0 {
        return F80::Zero { neg };
    }
    let mant = if len <= 64 {
        let shift = 64 - len;
        exp -= shift as i64;
        n.to_u64() << shift
    } else {
        let shift = len - 64;
        let mut q = n.shr(shift).to_u64();
        let half = n.bit(shift - 1);
        let rest = n.any_below(shift - 1) || sticky;
        exp += shift as i64;
        if half && (rest || q & 1 == 1) {
            q = q.wrapping_add(1);
            if q == 0 {
                q = 1 << 63;
                exp += 1;
            }
        }
        q
    };
    // The value's leading bit sits at 2^(exp + 63).
    if exp + 63 > MAX_EXP {
        return F80::Inf { neg };
    }
    if exp + 63 < MIN_EXP {
        return F80::Zero { neg };
    }
    F80::Finite { neg, mant, exp }
}

/// Redis's `string2ld` (strtold that must consume everything, no leading space, no NaN, no
/// overflow or underflow to zero). Hex floats are not supported.
pub fn parse(s: &[u8]) -> Option<F80> {
    if s.is_empty() || s.len() >= 5 * 1024 || s[0].is_ascii_whitespace() {
        return None;
    }
    let (neg, body) = match s[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    if lower == b"inf" || lower == b"infinity" {
        return Some(F80::Inf { neg });
    }
    if lower.starts_with(b"0x") {
        return parse_hex(neg, &body[2..]);
    }
    let (num, exp10) = match body.iter().position(|&c| c == b'e' || c == b'E') {
        Some(i) => {
            let e = &body[i + 1..];
            let digits = e
                .strip_prefix(b"-")
                .or_else(|| e.strip_prefix(b"+"))
                .unwrap_or(e);
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let v: i64 = std::str::from_utf8(digits)
                .ok()?
                .parse()
                .unwrap_or(i64::MAX / 2);
            (&body[..i], if e.first() == Some(&b'-') { -v } else { v })
        }
        None => (body, 0),
    };
    let mut d = Big(Vec::new());
    let mut frac = 0i64;
    let mut seen_dot = false;
    let mut digits = 0;
    for &c in num {
        match c {
            b'.' if !seen_dot => seen_dot = true,
            b'0'..=b'9' => {
                d.mul_small(10);
                d.add_small((c - b'0') as u32);
                digits += 1;
                if seen_dot {
                    frac += 1;
                }
            }
            _ => return None,
        }
    }
    if digits == 0 {
        return None;
    }
    if d.is_zero() {
        return Some(F80::Zero { neg });
    }
    let k = exp10.saturating_sub(frac);
    let magnitude = d.bits() as i64 + k.saturating_mul(10) / 3;
    if magnitude > MAX_EXP + 100 {
        return None; // overflow: HUGE_VAL with ERANGE
    }
    if magnitude < MIN_EXP - 100 {
        return None; // underflow to zero with ERANGE
    }
    let v = if k >= 0 {
        let n = {
            let mut n = d;
            for _ in 0..k {
                n.mul_small(10);
            }
            n
        };
        round(neg, &n, 0, false)
    } else {
        let p = Big::pow10((-k) as u32);
        // Scale so the quotient has at least 66 bits.
        let s = (66 + p.bits() as i64 - d.bits() as i64).max(0) as u64;
        let (q, r) = d.shl(s).divmod(&p);
        round(neg, &q, -(s as i64), !r.is_zero())
    };
    match v {
        F80::Finite { .. } => Some(v),
        _ => None,
    }
}

/// The part of a hex float after `0x`: hex digits, an optional `.`, an optional `p` exponent.
fn parse_hex(neg: bool, s: &[u8]) -> Option<F80> {
    let (num, exp2) = match s.iter().position(|&c| c == b'p' || c == b'P') {
        Some(i) => {
            let e = &s[i + 1..];
            let digits = e
                .strip_prefix(b"-")
                .or_else(|| e.strip_prefix(b"+"))
                .unwrap_or(e);
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let v: i64 = std::str::from_utf8(digits)
                .ok()?
                .parse()
                .unwrap_or(i64::MAX / 2);
            (&s[..i], if e.first() == Some(&b'-') { -v } else { v })
        }
        None => (s, 0),
    };
    let mut h = Big(Vec::new());
    let (mut frac, mut digits, mut seen_dot) = (0i64, 0, false);
    for &c in num {
        match c {
            b'.' if !seen_dot => seen_dot = true,
            c if c.is_ascii_hexdigit() => {
                h.mul_small(16);
                h.add_small((c as char).to_digit(16)?);
                digits += 1;
                if seen_dot {
                    frac += 1;
                }
            }
            _ => return None,
        }
    }
    if digits == 0 {
        return None;
    }
    if h.is_zero() {
        return Some(F80::Zero { neg });
    }
    if digits > 2000 || exp2.abs() > 100_000 {
        return None;
    }
    match round(neg, &h, exp2 - 4 * frac, false) {
        v @ F80::Finite { .. } => Some(v),
        _ => None,
    }
}

/// Exact `a + b`, rounded to a long double.
pub fn add(a: F80, b: F80) -> F80 {
    match (a, b) {
        (F80::Inf { neg }, F80::Inf { neg: n2 }) if neg != n2 => F80::Inf { neg }, // NaN: caller rejects inf anyway
        (F80::Inf { .. }, _) => a,
        (_, F80::Inf { .. }) => b,
        (F80::Zero { neg: n1 }, F80::Zero { neg: n2 }) => F80::Zero { neg: n1 && n2 },
        (F80::Zero { .. }, _) => b,
        (_, F80::Zero { .. }) => a,
        (
            F80::Finite {
                neg: na,
                mant: ma,
                exp: ea,
            },
            F80::Finite {
                neg: nb,
                mant: mb,
                exp: eb,
            },
        ) => {
            // When the exponents are far apart the smaller one only makes the result inexact,
            // which cannot move a 64-bit rounding of the larger: keep the larger.
            if ea - eb > 130 {
                return a;
            }
            if eb - ea > 130 {
                return b;
            }
            let e = ea.min(eb);
            let x = Big::from_u64(ma).shl((ea - e) as u64);
            let y = Big::from_u64(mb).shl((eb - e) as u64);
            if na == nb {
                round(na, &x.add(&y), e, false)
            } else {
                match x.cmp(&y) {
                    Ordering::Equal => F80::Zero { neg: false },
                    Ordering::Greater => round(na, &x.sub(&y), e, false),
                    Ordering::Less => round(nb, &y.sub(&x), e, false),
                }
            }
        }
    }
}

/// `printf("%.17Lf")` of a finite value.
fn format_17f(v: F80) -> String {
    let (neg, int_and_frac) = match v {
        F80::Zero { neg } => (neg, "0.00000000000000000".to_string()),
        F80::Inf { neg } => return if neg { "-inf".into() } else { "inf".into() },
        F80::Finite { neg, mant, exp } => {
            let q = if exp >= 0 {
                let mut n = Big::from_u64(mant).shl(exp as u64);
                for _ in 0..17 {
                    n.mul_small(10);
                }
                n
            } else {
                let mut n = Big::from_u64(mant);
                for _ in 0..17 {
                    n.mul_small(10);
                }
                let sh = (-exp) as u64;
                let mut q = n.shr(sh);
                let half = n.bit(sh - 1);
                let rest = n.any_below(sh - 1);
                if half && (rest || q.bit(0)) {
                    q.add_small(1);
                }
                q
            };
            let mut digits = q.to_decimal();
            if digits.len() < 18 {
                digits = format!("{}{digits}", "0".repeat(18 - digits.len()));
            }
            let (i, f) = digits.split_at(digits.len() - 17);
            (neg, format!("{i}.{f}"))
        }
    };
    if neg {
        format!("-{int_and_frac}")
    } else {
        int_and_frac
    }
}

/// Redis's `ld2string(..., LD_STR_HUMAN)`: `%.17Lf` without trailing zeros, and "-0" as "0".
pub fn to_human(v: F80) -> String {
    let mut s = format_17f(v);
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    if s == "-0" {
        s = "0".into();
    }
    s
}

/// INCRBYFLOAT: the new value's text, or Redis's error.
pub fn incr_by_float(old: &[u8], by: &[u8]) -> Result<String, &'static str> {
    const NOT_FLOAT: &str = "ERR value is not a valid float";
    let a = parse(old).ok_or(NOT_FLOAT)?;
    let b = parse(by).ok_or(NOT_FLOAT)?;
    let sum = add(a, b);
    if matches!(a, F80::Inf { .. })
        || matches!(b, F80::Inf { .. })
        || matches!(sum, F80::Inf { .. })
    {
        return Err("ERR increment would produce NaN or Infinity");
    }
    Ok(to_human(sum))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incr(a: &str, b: &str) -> String {
        incr_by_float(a.as_bytes(), b.as_bytes()).unwrap()
    }

    #[test]
    fn matches_redis_long_double_results() {
        // Each expected value is what redis-server 7.0.15 on x86-64 answers.
        assert_eq!(incr("12345.6", "0.1"), "12345.69999999999999929");
        assert_eq!(incr("0.1", "0.2"), "0.3");
        assert_eq!(incr("10.5", "0.1"), "10.6");
        assert_eq!(incr("3", "1.5e-7"), "3.00000015");
        assert_eq!(incr("3.00000015", "1e20"), "100000000000000000000");
        assert_eq!(incr("5.0e3", "2.0e2"), "5200");
        assert_eq!(
            incr("10.6", "1e300"),
            "1000000000000000000008997324079559193870523944273290747938260082321265646596180935755849152083750497190350372508614274835903592556184672983913096260520748646287327135641843653294084255107606016789726652932370030551382947620994540294772781889620606179267611627097410650567187386105690089424915104006144"
        );
        assert_eq!(incr("1", "-1"), "0");
        assert_eq!(incr("-0", "0"), "0");
        assert_eq!(incr("0", "-0.5"), "-0.5");
        assert_eq!(incr("0x10", "1"), "17");
        assert_eq!(incr("0x1.8p1", "-0X1P-2"), "2.75");
    }

    #[test]
    fn rejects_what_string2ld_rejects() {
        for bad in [
            "", " 1", "1 ", "abc", "1e", "nan", "1e99999", "1e-99999", "0x", "0x1p", "1.2.3",
        ] {
            assert_eq!(
                incr_by_float(bad.as_bytes(), b"1"),
                Err("ERR value is not a valid float"),
                "{bad:?}"
            );
        }
        assert_eq!(
            incr_by_float(b"1", b"inf"),
            Err("ERR increment would produce NaN or Infinity")
        );
        assert_eq!(
            incr_by_float(b"1.1e4932", b"1.1e4932"),
            Err("ERR increment would produce NaN or Infinity")
        );
    }

    #[test]
    fn parse_rounds_to_nearest_even() {
        // 0.1 as a long double: 0xCCCCCCCCCCCCCCCD * 2^-67.
        assert_eq!(
            parse(b"0.1"),
            Some(F80::Finite {
                neg: false,
                mant: 0xCCCC_CCCC_CCCC_CCCD,
                exp: -67
            })
        );
        // 2^64 + 1 is a tie between 2^64 and 2^64 + 2: rounds to the even 2^64.
        assert_eq!(
            parse(b"18446744073709551617"),
            Some(F80::Finite {
                neg: false,
                mant: 1 << 63,
                exp: 1
            })
        );
    }
}
