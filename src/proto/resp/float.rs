//! `INCRBYFLOAT` arithmetic as Redis does it on x86-64: in C's 80-bit `long double`
//! (64-bit mantissa), parsed like `strtold` and printed with `"%.17Lf"` less its trailing
//! zeros. Rust has no such type, so [`F80`] emulates it exactly: parsing, addition and
//! printing are done on big integers and rounded once, to nearest-even, as the hardware
//! and glibc do. That is what makes `10.5 + 0.1` print `10.6`, as in Redis (an `f64` sum
//! would print `10.59999999999999964`).
//!
//! Bounded: inputs longer than Redis's `MAX_LONG_DOUBLE_CHARS` (5 KiB) are refused before
//! any work, and every intermediate number has at most a few thousand 32-bit limbs.
//! Hexadecimal floats (`0x1.8p3`) are accepted, as `strtold` accepts them.

use std::cmp::Ordering;

/// Largest exponent of the top mantissa bit of a finite `long double`.
const MAX_TOP: i64 = 16383;
/// Smallest exponent of the lowest mantissa bit (subnormals included).
const MIN_BOTTOM: i64 = -16445;

/// An unsigned big integer, little-endian 32-bit limbs, no trailing zero limbs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Big(Vec<u32>);

impl Big {
    fn from_u128(mut v: u128) -> Big {
        let mut l = Vec::new();
        while v > 0 {
            l.push(v as u32);
            v >>= 32;
        }
        Big(l)
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
            Some(&top) => (self.0.len() as u64 - 1) * 32 + u64::from(32 - top.leading_zeros()),
        }
    }

    fn bit(&self, i: u64) -> bool {
        self.0.get((i / 32) as usize).is_some_and(|l| l >> (i % 32) & 1 == 1)
    }

    /// Whether any bit below `i` is set.
    fn any_below(&self, i: u64) -> bool {
        let (w, b) = ((i / 32) as usize, i % 32);
        self.0.iter().take(w.min(self.0.len())).any(|&l| l != 0)
            || (b > 0 && self.0.get(w).is_some_and(|&l| l & ((1u32 << b) - 1) != 0))
    }

    fn mul_add_small(&mut self, m: u32, a: u32) {
        let mut carry = u64::from(a);
        for l in &mut self.0 {
            let v = u64::from(*l) * u64::from(m) + carry;
            *l = v as u32;
            carry = v >> 32;
        }
        if carry > 0 {
            self.0.push(carry as u32);
        }
    }

    /// Divides by `d`, returning the remainder.
    fn div_small(&mut self, d: u32) -> u32 {
        let mut rem = 0u64;
        for l in self.0.iter_mut().rev() {
            let v = (rem << 32) | u64::from(*l);
            *l = (v / u64::from(d)) as u32;
            rem = v % u64::from(d);
        }
        self.trim();
        rem as u32
    }

    fn shl(&self, n: u64) -> Big {
        if self.is_zero() {
            return Big(Vec::new());
        }
        let (w, b) = ((n / 32) as usize, (n % 32) as u32);
        let mut l = vec![0u32; w];
        let mut carry = 0u32;
        for &x in &self.0 {
            if b == 0 {
                l.push(x);
            } else {
                l.push((x << b) | carry);
                carry = x >> (32 - b);
            }
        }
        if carry > 0 {
            l.push(carry);
        }
        Big(l)
    }

    /// The bits from `i` up, as a u128 (callers ask for at most 128 bits).
    fn bits_from(&self, i: u64) -> u128 {
        let mut v = 0u128;
        for k in (0..128u64).rev() {
            v = (v << 1) | u128::from(self.bit(i + k));
        }
        v
    }

    fn cmp(&self, o: &Big) -> Ordering {
        self.0.len().cmp(&o.0.len()).then_with(|| self.0.iter().rev().cmp(o.0.iter().rev()))
    }

    fn add(&self, o: &Big) -> Big {
        let n = self.0.len().max(o.0.len());
        let mut l = Vec::with_capacity(n + 1);
        let mut carry = 0u64;
        for i in 0..n {
            let v = u64::from(*self.0.get(i).unwrap_or(&0))
                + u64::from(*o.0.get(i).unwrap_or(&0))
                + carry;
            l.push(v as u32);
            carry = v >> 32;
        }
        if carry > 0 {
            l.push(carry as u32);
        }
        Big(l)
    }

    /// `self - o`, for `self >= o`.
    fn sub(&self, o: &Big) -> Big {
        let mut l = Vec::with_capacity(self.0.len());
        let mut borrow = 0i64;
        for i in 0..self.0.len() {
            let mut v = i64::from(self.0[i]) - i64::from(*o.0.get(i).unwrap_or(&0)) - borrow;
            borrow = 0;
            if v < 0 {
                v += 1 << 32;
                borrow = 1;
            }
            l.push(v as u32);
        }
        let mut b = Big(l);
        b.trim();
        b
    }

    fn pow10(n: u64) -> Big {
        let mut b = Big(vec![1]);
        let mut left = n;
        while left > 0 {
            let step = left.min(9);
            b.mul_add_small(10u32.pow(step as u32), 0);
            left -= step;
        }
        b
    }
}

/// An x87 80-bit extended float: `±mant × 2^exp`, or an infinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct F80 {
    neg: bool,
    inf: bool,
    /// Normalized (top bit set) unless zero.
    mant: u64,
    exp: i64,
}

impl F80 {
    /// Positive zero.
    pub(super) const ZERO: F80 = F80 { neg: false, inf: false, mant: 0, exp: 0 };

    /// Rounds `big × 2^exp` (plus a sticky bit for discarded lower bits) to 64 bits,
    /// to nearest-even. None on overflow; zero on total underflow.
    fn round(neg: bool, big: &Big, exp: i64, sticky: bool) -> Option<F80> {
        let n = big.bits();
        if n == 0 {
            return Some(F80 { neg, ..F80::ZERO });
        }
        // Keep 64 bits, fewer when the value is subnormal.
        let top = exp + n as i64 - 1;
        let keep = (top - MIN_BOTTOM + 1).clamp(0, 64) as u64;
        if keep == 0 {
            return Some(F80 { neg, ..F80::ZERO });
        }
        let (mut mant, mut e) = if n <= keep {
            ((big.bits_from(0) << (keep - n)) as u64, exp - (keep - n) as i64)
        } else {
            let shift = n - keep;
            let m = (big.bits_from(shift) & ((1u128 << keep) - 1)) as u64;
            let round = big.bit(shift - 1);
            let st = sticky || big.any_below(shift - 1);
            let mut m = m;
            let mut e = exp + shift as i64;
            if round && (st || m & 1 == 1) {
                m = m.wrapping_add(1);
                if keep == 64 && m == 0 {
                    m = 1 << 63;
                    e += 1;
                } else if keep < 64 && m >> keep == 1 {
                    m >>= 1;
                    e += 1;
                }
            }
            (m, e)
        };
        if mant == 0 {
            return Some(F80 { neg, ..F80::ZERO });
        }
        // Normalize (subnormals keep a representation with the top bit set; their value
        // was rounded at the subnormal precision above).
        let lz = mant.leading_zeros();
        mant <<= lz;
        e -= i64::from(lz);
        if e + 63 > MAX_TOP {
            return None;
        }
        Some(F80 { neg, inf: false, mant, exp: e })
    }

    /// Parses a value as Redis's `string2ld` does: `strtold` syntax (decimal only), no
    /// leading space, nothing after the number, not NaN, no overflow, no underflow to
    /// zero, at most 5119 bytes.
    pub(super) fn parse(s: &[u8]) -> Option<F80> {
        if s.is_empty() || s.len() >= 5 * 1024 || s[0].is_ascii_whitespace() || s[0] == 0x0b {
            return None;
        }
        let (neg, body) = match s[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        if body.eq_ignore_ascii_case(b"inf") || body.eq_ignore_ascii_case(b"infinity") {
            return Some(F80 { neg, inf: true, mant: 0, exp: 0 });
        }
        if body.len() > 2 && body[0] == b'0' && (body[1] | 0x20) == b'x' {
            return F80::parse_hex(neg, &body[2..]);
        }
        let mut d = Big(Vec::new());
        let (mut digits, mut frac, mut seen_dot, mut i) = (0u64, 0i64, false, 0);
        while i < body.len() {
            match body[i] {
                c @ b'0'..=b'9' => {
                    if !(d.is_zero() && c == b'0') {
                        d.mul_add_small(10, u32::from(c - b'0'));
                    }
                    digits += 1;
                    if seen_dot {
                        frac += 1;
                    }
                }
                b'.' if !seen_dot => seen_dot = true,
                _ => break,
            }
            i += 1;
        }
        if digits == 0 {
            return None;
        }
        let mut e10: i64 = 0;
        if i < body.len() {
            if body[i] != b'e' && body[i] != b'E' {
                return None;
            }
            e10 = Self::parse_exp(&body[i + 1..])?;
        }
        if d.is_zero() {
            return Some(F80 { neg, ..F80::ZERO });
        }
        let e10 = e10 - frac;
        // Decimal magnitude of the leading digit, to refuse overflow and underflow early.
        let sig = {
            let mut t = d.clone();
            let mut n = 0i64;
            while !t.is_zero() {
                t.div_small(10);
                n += 1;
            }
            n
        };
        let mag = sig + e10 - 1;
        if mag > 4933 {
            return None;
        }
        if mag < -4952 {
            return None;
        }
        let r = if e10 >= 0 {
            let big = {
                let p = Big::pow10(e10 as u64);
                mul(&d, &p)
            };
            F80::round(neg, &big, 0, false)?
        } else {
            let dv = Big::pow10((-e10) as u64);
            let k = (dv.bits() as i64 - d.bits() as i64 + 68).max(0) as u64;
            let num = d.shl(k);
            let (q, rem_nonzero) = divide(&num, &dv);
            F80::round(neg, &q, -(k as i64), rem_nonzero)?
        };
        if r.mant == 0 {
            return None; // Underflow to zero: ERANGE, refused by Redis.
        }
        Some(r)
    }

    /// The signed decimal exponent after an `e` or `p` marker, saturated at 1_000_000;
    /// None when it is empty or not all digits.
    fn parse_exp(s: &[u8]) -> Option<i64> {
        let (neg, rest) = match s.first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        if rest.is_empty() || !rest.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut e: i64 = 0;
        for &c in rest {
            e = (e * 10 + i64::from(c - b'0')).min(1_000_000);
        }
        Some(if neg { -e } else { e })
    }

    /// The digits after `0x` of a hexadecimal float (`strtold`'s `1.8p3` syntax).
    fn parse_hex(neg: bool, s: &[u8]) -> Option<F80> {
        let mut m = Big(Vec::new());
        let (mut digits, mut frac, mut seen_dot, mut i) = (0i64, 0i64, false, 0);
        while i < s.len() {
            let c = s[i];
            if let Some(v) = (c as char).to_digit(16) {
                if !(m.is_zero() && v == 0) {
                    if m.bits() > 20_000 {
                        return None;
                    }
                    m.mul_add_small(16, v);
                    if seen_dot {
                        frac += 1;
                    }
                } else if seen_dot {
                    frac += 1;
                }
                digits += 1;
            } else if c == b'.' && !seen_dot {
                seen_dot = true;
            } else {
                break;
            }
            i += 1;
        }
        if digits == 0 {
            return None;
        }
        let mut e2: i64 = 0;
        if i < s.len() {
            if s[i] | 0x20 != b'p' {
                return None;
            }
            e2 = Self::parse_exp(&s[i + 1..])?;
        }
        if m.is_zero() {
            return Some(F80 { neg, ..F80::ZERO });
        }
        let exp = e2 - 4 * frac;
        let top = exp + m.bits() as i64 - 1;
        if !(MIN_BOTTOM - 1..=MAX_TOP).contains(&top) {
            return None;
        }
        let r = F80::round(neg, &m, exp, false)?;
        (r.mant != 0).then_some(r)
    }

    /// `self + o` rounded to nearest-even; None when the result is infinite or NaN.
    pub(super) fn add(&self, o: &F80) -> Option<F80> {
        if self.inf || o.inf {
            return None;
        }
        if self.mant == 0 && o.mant == 0 {
            return Some(F80 { neg: self.neg && o.neg, ..F80::ZERO });
        }
        if self.mant == 0 {
            return Some(*o);
        }
        if o.mant == 0 {
            return Some(*self);
        }
        let e = self.exp.min(o.exp);
        let a = Big::from_u128(u128::from(self.mant)).shl((self.exp - e) as u64);
        let b = Big::from_u128(u128::from(o.mant)).shl((o.exp - e) as u64);
        if self.neg == o.neg {
            return F80::round(self.neg, &a.add(&b), e, false);
        }
        match a.cmp(&b) {
            Ordering::Equal => Some(F80::ZERO),
            Ordering::Greater => F80::round(self.neg, &a.sub(&b), e, false),
            Ordering::Less => F80::round(o.neg, &b.sub(&a), e, false),
        }
    }
}

fn mul(a: &Big, b: &Big) -> Big {
    let mut l = vec![0u32; a.0.len() + b.0.len() + 1];
    for (i, &x) in a.0.iter().enumerate() {
        let mut carry = 0u64;
        for (j, &y) in b.0.iter().enumerate() {
            let v = u64::from(x) * u64::from(y) + u64::from(l[i + j]) + carry;
            l[i + j] = v as u32;
            carry = v >> 32;
        }
        let mut k = i + b.0.len();
        while carry > 0 {
            let v = u64::from(l[k]) + carry;
            l[k] = v as u32;
            carry = v >> 32;
            k += 1;
        }
    }
    let mut r = Big(l);
    r.trim();
    r
}

/// `n / d` by shift-and-subtract (the quotient has few bits here); and whether a
/// remainder is left.
fn divide(n: &Big, d: &Big) -> (Big, bool) {
    let mut q = Big(Vec::new());
    if n.cmp(d) == Ordering::Less {
        return (q, !n.is_zero());
    }
    let s = n.bits() - d.bits();
    let mut rem = n.clone();
    let mut qbits = vec![0u32; (s / 32 + 1) as usize];
    for i in (0..=s).rev() {
        let t = d.shl(i);
        if rem.cmp(&t) != Ordering::Less {
            rem = rem.sub(&t);
            qbits[(i / 32) as usize] |= 1 << (i % 32);
        }
    }
    q.0 = qbits;
    q.trim();
    (q, !rem.is_zero())
}

/// `"%.17Lf"` of `v`, without trailing zeros after the point nor a bare point, and `0`
/// for `-0` (Redis's `ld2string` in `LD_STR_HUMAN` mode).
pub(super) fn format_human(v: &F80) -> Vec<u8> {
    const P17: u128 = 100_000_000_000_000_000;
    let mut s = String::new();
    if v.neg {
        s.push('-');
    }
    if v.exp >= 0 {
        let mut big = Big::from_u128(u128::from(v.mant)).shl(v.exp as u64);
        let mut chunks = Vec::new();
        while !big.is_zero() {
            chunks.push(big.div_small(1_000_000_000));
        }
        match chunks.pop() {
            None => s.push('0'),
            Some(top) => {
                s.push_str(&top.to_string());
                for c in chunks.iter().rev() {
                    s.push_str(&format!("{c:09}"));
                }
            }
        }
    } else {
        let n = u128::from(v.mant) * P17;
        let sh = (-v.exp) as u32;
        let q = if sh >= 122 {
            0
        } else {
            let mut q = n >> sh;
            let round = n >> (sh - 1) & 1 == 1;
            let sticky = sh > 1 && n & ((1u128 << (sh - 1)) - 1) != 0;
            if round && (sticky || q & 1 == 1) {
                q += 1;
            }
            q
        };
        let (int, frac) = (q / P17, q % P17);
        let mut f = format!("{frac:017}");
        while f.ends_with('0') {
            f.pop();
        }
        s.push_str(&int.to_string());
        if !f.is_empty() {
            s.push('.');
            s.push_str(&f);
        }
    }
    if s == "-0" {
        s = "0".into();
    }
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inc(a: &str, b: &str) -> Option<String> {
        let x = F80::parse(a.as_bytes())?;
        let y = F80::parse(b.as_bytes())?;
        x.add(&y).map(|v| String::from_utf8(format_human(&v)).unwrap())
    }

    #[test]
    fn sums_print_like_redis() {
        assert_eq!(inc("10.5", "0.1").as_deref(), Some("10.6"));
        assert_eq!(inc("10.50", "0.1").as_deref(), Some("10.6"));
        assert_eq!(inc("5.0e3", "2.0e2").as_deref(), Some("5200"));
        assert_eq!(inc("0", "3.0e3").as_deref(), Some("3000"));
        assert_eq!(inc("1.5", "1.5").as_deref(), Some("3"));
        assert_eq!(inc("17179869184", "1.5").as_deref(), Some("17179869185.5"));
        assert_eq!(inc("17179869184", "17179869184").as_deref(), Some("34359738368"));
        assert_eq!(inc("1", "-1.1").as_deref(), Some("-0.1"));
        assert_eq!(inc("0.024390243902439025", "-0.024390243902439025").as_deref(), Some("0"));
        assert_eq!(inc("-0", "0").as_deref(), Some("0"));
        assert_eq!(inc("0", "1e-20").as_deref(), Some("0"));
        // Checked against redis-server 7.0.15.
        assert_eq!(inc("1e30", "0").as_deref(), Some("1000000000000000000024696061952"));
        assert_eq!(inc("100.1", "0").as_deref(), Some("100.1"));
        assert_eq!(inc("0.1", "1e-18").as_deref(), Some("0.1"));
        assert_eq!(inc("0", "1.23456789012345678901234").as_deref(), Some("1.23456789012345679"));
        assert_eq!(inc("0", "-1e-30").as_deref(), Some("0"));
        let big = inc("0", "1e4000").unwrap();
        assert_eq!(big.len(), 4000);
        assert!(big.starts_with("99999999999999999999654638730996237849324925835069576313015"));
        assert!(big.ends_with("6648276349901340672"));
        assert_eq!(inc("0x10", "-0.1").as_deref(), Some("15.9"));
        assert_eq!(inc("0x1.8p3", "0").as_deref(), Some("12"));
        assert_eq!(inc("0", "inf"), None);
        assert_eq!(inc("1e4932", "1e4932"), None);
    }

    #[test]
    fn parse_refuses_what_redis_refuses() {
        for bad in [
            "", " 1", "1 ", "abc", "1e", "1e+", "nan", "-nan", "1.2.3", "0x", "0xp3", "0x1p",
            "1e5000", "1e-5000", ".",
        ] {
            assert!(F80::parse(bad.as_bytes()).is_none(), "{bad:?}");
        }
        for good in [
            "1",
            "+1",
            "-1",
            "1.",
            ".5",
            "1e3",
            "1E-3",
            "inf",
            "-Infinity",
            "0e99999",
            "00012",
            "0x10",
            "0X1.8p3",
            "-0x.8",
        ] {
            assert!(F80::parse(good.as_bytes()).is_some(), "{good:?}");
        }
        assert!(F80::parse(&[b'1'; 6000]).is_none());
        assert!(F80::parse(&[b'1'; 5000]).is_none(), "overflows");
        let mut long = b"0.".to_vec();
        long.extend_from_slice(&[b'1'; 5000]);
        assert!(F80::parse(&long).is_some());
    }
}
