//! String commands beyond plain `GET`/`SET`: `GETEX`, `GETRANGE`/`SUBSTR`, `SETRANGE`,
//! `LCS`, `SETBIT`/`GETBIT`/`BITCOUNT`/`BITPOS` and `INCRBYFLOAT`, ported from Redis 7.0's
//! `t_string.c` and `bitops.c` so replies, error texts and the order in which arguments
//! are checked match.
//!
//! Sizes are bounded by [`super::RespConfig::max_bulk`], which plays the part of Redis's
//! `proto-max-bulk-len` (Redis's default is 512 MB, evloop's 16 MiB): `SETRANGE` and
//! `SETBIT` refuse to grow a value past it, and `LCS` refuses a table larger than it.

use super::commands::{Args, Unit, deadline, expire_opt};
use super::keyspace::{Keyspace, Ttl};
use super::parse::parse_i64;
use super::reply::{self, NIL, NOT_INTEGER, SYNTAX_ERR, ZERO};

const EMPTY_BULK: &[u8] = b"$0\r\n\r\n";
const TOO_BIG: &[u8] = b"ERR string exceeds maximum allowed size (proto-max-bulk-len)";
const BAD_OFFSET: &[u8] = b"ERR bit offset is not an integer or out of range";

/// `GETEX key [EX s | PX ms | EXAT t | PXAT t | PERSIST]`.
pub(super) fn getex(ks: &Keyspace, a: &Args<'_>, out: &mut Vec<u8>) {
    let mut expire: Option<(Unit, &[u8])> = None;
    let mut persist = false;
    let mut j = 2;
    while j < a.len() {
        let opt = a.get(j);
        if opt.eq_ignore_ascii_case(b"persist") && expire.is_none() {
            persist = true;
        } else if let Some(e) = expire_opt(a, j, persist, expire) {
            expire = Some(e);
            j += 1;
        } else {
            reply::raw(out, SYNTAX_ERR);
            return;
        }
        j += 1;
    }
    let (key, mut now) = (a.get(1), ks.clock());
    let mut shard = ks.shard(key);
    if !shard.contains(key, &mut now) {
        reply::raw(out, NIL);
        return;
    }
    let d = match expire {
        Some((u, arg)) => match deadline(ks, arg, u, b"getex", &mut now, out) {
            Some(d) => Some(d),
            None => return,
        },
        None => None,
    };
    shard.with(key, &mut now, |e| reply::opt_bulk(out, e.map(|e| &e.value[..])));
    if let Some(d) = d {
        if d <= now.get() {
            shard.remove(key);
        } else {
            shard.set_expire(key, Some(d));
        }
    } else if persist {
        shard.set_expire(key, None);
    }
}

/// Redis's index normalization for `GETRANGE` and byte ranges: negative indexes count
/// from the end; the result is clamped to `[0, len)`. None when the range is empty.
fn range(mut start: i64, mut end: i64, len: i64) -> Option<(i64, i64)> {
    if start < 0 {
        start = start.saturating_add(len);
    }
    if end < 0 {
        end = end.saturating_add(len);
    }
    start = start.max(0);
    end = end.max(0);
    if end >= len {
        end = len - 1;
    }
    (start <= end && len > 0).then_some((start, end))
}

/// `GETRANGE key start end` (and `SUBSTR`).
pub(super) fn getrange(ks: &Keyspace, a: &Args<'_>, out: &mut Vec<u8>) {
    let (Some(start), Some(end)) = (parse_i64(a.get(2)), parse_i64(a.get(3))) else {
        reply::raw(out, NOT_INTEGER);
        return;
    };
    let (key, mut now) = (a.get(1), ks.clock());
    ks.shard(key).with(key, &mut now, |e| {
        let Some(e) = e else {
            return reply::raw(out, EMPTY_BULK);
        };
        if start < 0 && end < 0 && start > end {
            return reply::raw(out, EMPTY_BULK);
        }
        match range(start, end, e.value.len() as i64) {
            Some((s, t)) => reply::bulk(out, &e.value[s as usize..=t as usize]),
            None => reply::raw(out, EMPTY_BULK),
        }
    });
}

/// `SETRANGE key offset value`: zero-pads, limited to `max` bytes.
pub(super) fn setrange(ks: &Keyspace, a: &Args<'_>, max: usize, out: &mut Vec<u8>) {
    let Some(offset) = parse_i64(a.get(2)) else {
        reply::raw(out, NOT_INTEGER);
        return;
    };
    if offset < 0 {
        reply::error(out, b"ERR offset is out of range");
        return;
    }
    let (key, value, mut now) = (a.get(1), a.get(3), ks.clock());
    let offset = offset as u64;
    let fits = (offset).checked_add(value.len() as u64).is_some_and(|t| t <= max as u64);
    let mut shard = ks.shard(key);
    let exists = shard.contains(key, &mut now);
    if value.is_empty() {
        let len = shard.with(key, &mut now, |e| e.map_or(0, |e| e.value.len()));
        reply::int(out, len as i64);
        return;
    }
    if !fits {
        reply::error(out, TOO_BIG);
        return;
    }
    let offset = offset as usize;
    if !exists {
        let mut v = vec![0u8; offset];
        v.extend_from_slice(value);
        shard.set(key, &v, Ttl::Clear, &mut now);
    }
    let len = shard.with(key, &mut now, |e| {
        let Some(e) = e else { return 0 };
        let end = offset + value.len();
        if e.value.len() < end {
            e.value.resize(end, 0);
        }
        e.value[offset..end].copy_from_slice(value);
        e.raw = true;
        e.value.len()
    });
    reply::int(out, len as i64);
}

/// A bit offset argument (`SETBIT`, `GETBIT`): non-negative, within `max` bytes.
fn bit_offset(arg: &[u8], max: usize) -> Option<u64> {
    let v = parse_i64(arg)?;
    (v >= 0 && ((v as u64) >> 3) < max as u64).then_some(v as u64)
}

/// `SETBIT key offset 0|1`: returns the old bit, growing the value with zeros.
pub(super) fn setbit(ks: &Keyspace, a: &Args<'_>, max: usize, out: &mut Vec<u8>) {
    let Some(off) = bit_offset(a.get(2), max) else {
        reply::error(out, BAD_OFFSET);
        return;
    };
    let on = match a.get(3) {
        b"1" => true,
        b"0" => false,
        _ => {
            reply::error(out, b"ERR bit is not an integer or out of range");
            return;
        }
    };
    let (key, mut now) = (a.get(1), ks.clock());
    let byte = (off >> 3) as usize;
    let mask = 1u8 << (7 - (off & 7));
    let mut shard = ks.shard(key);
    let updated = shard.upsert(
        key,
        &mut now,
        |e| {
            if e.value.len() <= byte {
                e.value.resize(byte + 1, 0);
            }
            let old = e.value[byte] & mask != 0;
            if on {
                e.value[byte] |= mask;
            } else {
                e.value[byte] &= !mask;
            }
            e.raw = true;
            old
        },
        || {
            let mut v = vec![0u8; byte + 1];
            if on {
                v[byte] |= mask;
            }
            v
        },
    );
    if updated.is_none() {
        // A key made by SETBIT is a raw string in Redis too.
        shard.with(key, &mut now, |e| {
            if let Some(e) = e {
                e.raw = true;
            }
        });
    }
    let old = updated.unwrap_or(false);
    reply::int(out, i64::from(old));
}

/// `GETBIT key offset`.
pub(super) fn getbit(ks: &Keyspace, a: &Args<'_>, max: usize, out: &mut Vec<u8>) {
    let Some(off) = bit_offset(a.get(2), max) else {
        reply::error(out, BAD_OFFSET);
        return;
    };
    let (key, mut now) = (a.get(1), ks.clock());
    let bit = ks.shard(key).with(key, &mut now, |e| {
        e.and_then(|e| e.value.get((off >> 3) as usize).copied())
            .is_some_and(|b| b & (1 << (7 - (off & 7))) != 0)
    });
    reply::int(out, i64::from(bit));
}

#[inline]
fn bit_at(p: &[u8], i: u64) -> bool {
    p.get((i >> 3) as usize).is_some_and(|b| b & (1 << (7 - (i & 7))) != 0)
}

/// Set bits of `p` in bit positions `[bs, be]`.
fn count_bits(p: &[u8], bs: u64, be: u64) -> u64 {
    let Some(last) = (p.len() as u64 * 8).checked_sub(1) else {
        return 0;
    };
    let be = be.min(last);
    let (mut i, mut n) = (bs, 0u64);
    while i <= be {
        if i & 7 == 0 && i + 7 <= be {
            n += u64::from(p.get((i >> 3) as usize).map_or(0, |b| b.count_ones()));
            i += 8;
        } else {
            n += u64::from(bit_at(p, i));
            i += 1;
        }
    }
    n
}

/// The first bit equal to `bit` in positions `[bs, be]` of `p`.
fn find_bit(p: &[u8], bs: u64, be: u64, bit: bool) -> Option<u64> {
    let be = be.min((p.len() as u64 * 8).checked_sub(1)?);
    let mut i = bs;
    while i <= be {
        if i & 7 == 0 && i + 7 <= be {
            let b = p.get((i >> 3) as usize).copied().unwrap_or(0);
            if b == if bit { 0 } else { 0xff } {
                i += 8;
                continue;
            }
        }
        if bit_at(p, i) == bit {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Reads `BYTE|BIT`; None on anything else.
fn bit_unit(arg: &[u8]) -> Option<bool> {
    if arg.eq_ignore_ascii_case(b"bit") {
        Some(true)
    } else if arg.eq_ignore_ascii_case(b"byte") {
        Some(false)
    } else {
        None
    }
}

/// The optional `BYTE|BIT` unit at `a[i]`, the last argument of `BITCOUNT` and `BITPOS`:
/// false (bytes) when absent, None when it is neither.
fn opt_bit_unit(a: &Args<'_>, i: usize) -> Option<bool> {
    if a.len() > i { bit_unit(a.get(i)) } else { Some(false) }
}

/// Clamps `[start, end]` (in bits when `isbit`, else bytes) over a value of `len` bytes
/// and returns the bit positions it covers, or None when empty.
fn bit_range(start: i64, end: i64, len: usize, isbit: bool) -> Option<(u64, u64)> {
    let total = if isbit { (len as i64).saturating_mul(8) } else { len as i64 };
    let (s, e) = range(start, end, total)?;
    Some(if isbit { (s as u64, e as u64) } else { (s as u64 * 8, e as u64 * 8 + 7) })
}

/// `BITCOUNT key [start end [BYTE|BIT]]`.
pub(super) fn bitcount(ks: &Keyspace, a: &Args<'_>, out: &mut Vec<u8>) {
    let (key, mut now) = (a.get(1), ks.clock());
    ks.shard(key).with(key, &mut now, |e| {
        let Some(e) = e else {
            return reply::raw(out, ZERO);
        };
        let p = &e.value;
        let n = match a.len() {
            2 => count_bits(p, 0, u64::MAX),
            4 | 5 => {
                let (Some(start), Some(end)) = (parse_i64(a.get(2)), parse_i64(a.get(3))) else {
                    return reply::raw(out, NOT_INTEGER);
                };
                if start < 0 && end < 0 && start > end {
                    return reply::raw(out, ZERO);
                }
                let Some(isbit) = opt_bit_unit(a, 4) else {
                    return reply::raw(out, SYNTAX_ERR);
                };
                bit_range(start, end, p.len(), isbit).map_or(0, |(s, t)| count_bits(p, s, t))
            }
            _ => return reply::raw(out, SYNTAX_ERR),
        };
        reply::int(out, n as i64);
    });
}

/// `BITPOS key bit [start [end [BYTE|BIT]]]`.
pub(super) fn bitpos(ks: &Keyspace, a: &Args<'_>, out: &mut Vec<u8>) {
    let Some(bit) = parse_i64(a.get(2)) else {
        reply::raw(out, NOT_INTEGER);
        return;
    };
    if bit != 0 && bit != 1 {
        reply::error(out, b"ERR The bit argument must be 1 or 0.");
        return;
    }
    let bit = bit == 1;
    let (key, mut now) = (a.get(1), ks.clock());
    ks.shard(key).with(key, &mut now, |e| {
        let Some(e) = e else {
            return reply::int(out, if bit { -1 } else { 0 });
        };
        let p = &e.value;
        let (start, end, isbit, end_given) = match a.len() {
            3 => (0, -1, false, false),
            4..=6 => {
                let Some(start) = parse_i64(a.get(3)) else {
                    return reply::raw(out, NOT_INTEGER);
                };
                let Some(isbit) = opt_bit_unit(a, 5) else {
                    return reply::raw(out, SYNTAX_ERR);
                };
                if a.len() >= 5 {
                    let Some(end) = parse_i64(a.get(4)) else {
                        return reply::raw(out, NOT_INTEGER);
                    };
                    (start, end, isbit, true)
                } else {
                    (start, -1, false, false)
                }
            }
            _ => return reply::raw(out, SYNTAX_ERR),
        };
        let Some((bs, be)) = bit_range(start, end, p.len(), isbit) else {
            return reply::int(out, -1);
        };
        let pos = match find_bit(p, bs, be, bit) {
            Some(i) => i as i64,
            None if bit || end_given => -1,
            None => be as i64 + 1,
        };
        reply::int(out, pos);
    });
}

/// `LCS key1 key2 [LEN] [IDX] [MINMATCHLEN n] [WITHMATCHLEN]`, Redis 7.0's algorithm
/// (the classic dynamic-programming table, refused when larger than `max` bytes).
pub(super) fn lcs(ks: &Keyspace, a: &Args<'_>, max: usize, out: &mut Vec<u8>) {
    let mut now = ks.clock();
    let get = |k: &[u8], now: &mut _| {
        ks.shard(k).with(k, now, |e| e.map(|e| e.value.clone())).unwrap_or_default()
    };
    let x = get(a.get(1), &mut now);
    let y = get(a.get(2), &mut now);
    let (mut getlen, mut getidx, mut withmatchlen, mut minmatchlen) = (false, false, false, 0i64);
    let mut j = 3;
    while j < a.len() {
        let opt = a.get(j);
        let more = j + 1 < a.len();
        if opt.eq_ignore_ascii_case(b"idx") {
            getidx = true;
        } else if opt.eq_ignore_ascii_case(b"len") {
            getlen = true;
        } else if opt.eq_ignore_ascii_case(b"withmatchlen") {
            withmatchlen = true;
        } else if opt.eq_ignore_ascii_case(b"minmatchlen") && more {
            let Some(v) = parse_i64(a.get(j + 1)) else {
                reply::raw(out, NOT_INTEGER);
                return;
            };
            minmatchlen = v.max(0);
            j += 1;
        } else {
            reply::raw(out, SYNTAX_ERR);
            return;
        }
        j += 1;
    }
    if getidx && getlen {
        reply::error(out, b"ERR If you want both the length and indexes, please just use IDX.");
        return;
    }
    let (alen, blen) = (x.len(), y.len());
    let cells = (alen as u128 + 1) * (blen as u128 + 1);
    if cells * 4 > max as u128 {
        reply::error(
            out,
            b"ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len",
        );
        return;
    }
    let w = blen + 1;
    let mut t = vec![0u32; cells as usize];
    for i in 1..=alen {
        for k in 1..=blen {
            t[i * w + k] = if x[i - 1] == y[k - 1] {
                t[(i - 1) * w + k - 1] + 1
            } else {
                t[(i - 1) * w + k].max(t[i * w + k - 1])
            };
        }
    }
    let total = t[alen * w + blen];
    let mut idx = total as usize;
    let compute = getidx || !getlen;
    let mut result = vec![0u8; if compute { idx } else { 0 }];
    let mut ranges: Vec<[usize; 5]> = Vec::new();
    let (mut as_, mut ae, mut bs, mut be) = (alen, 0usize, 0usize, 0usize);
    let (mut i, mut k) = (alen, blen);
    while compute && i > 0 && k > 0 {
        let mut emit = false;
        if x[i - 1] == y[k - 1] {
            if let Some(r) = result.get_mut(idx.wrapping_sub(1)) {
                *r = x[i - 1];
            }
            if as_ == alen {
                as_ = i - 1;
                ae = i - 1;
                bs = k - 1;
                be = k - 1;
            } else if as_ == i && bs == k {
                as_ -= 1;
                bs -= 1;
            } else {
                emit = true;
            }
            if as_ == 0 || bs == 0 {
                emit = true;
            }
            idx = idx.saturating_sub(1);
            i -= 1;
            k -= 1;
        } else {
            if t[(i - 1) * w + k] > t[i * w + k - 1] {
                i -= 1;
            } else {
                k -= 1;
            }
            if as_ != alen {
                emit = true;
            }
        }
        if emit {
            let mlen = ae.wrapping_sub(as_).wrapping_add(1);
            if minmatchlen == 0 || mlen as i64 >= minmatchlen {
                ranges.push([as_, ae, bs, be, mlen]);
            }
            as_ = alen;
        }
    }
    if getidx {
        reply::array(out, 4);
        reply::bulk(out, b"matches");
        reply::array(out, ranges.len());
        for r in &ranges {
            reply::array(out, 2 + usize::from(withmatchlen));
            reply::array(out, 2);
            reply::int(out, r[0] as i64);
            reply::int(out, r[1] as i64);
            reply::array(out, 2);
            reply::int(out, r[2] as i64);
            reply::int(out, r[3] as i64);
            if withmatchlen {
                reply::int(out, r[4] as i64);
            }
        }
        reply::bulk(out, b"len");
        reply::int(out, i64::from(total));
    } else if getlen {
        reply::int(out, i64::from(total));
    } else {
        reply::bulk(out, &result);
    }
}

/// `INCRBYFLOAT key increment`, computed and formatted as Redis does with `long double`
/// (see [`super::float`]).
pub(super) fn incrbyfloat(ks: &Keyspace, a: &Args<'_>, out: &mut Vec<u8>) {
    use super::float::{F80, format_human};
    let (key, mut now) = (a.get(1), ks.clock());
    let mut shard = ks.shard(key);
    let old = shard.with(key, &mut now, |e| e.map(|e| F80::parse(&e.value)));
    let value = match old {
        None => Some(F80::ZERO),
        Some(v) => v,
    };
    let (Some(value), Some(incr)) = (value, F80::parse(a.get(2))) else {
        reply::error(out, b"ERR value is not a valid float");
        return;
    };
    let Some(sum) = value.add(&incr) else {
        reply::error(out, b"ERR increment would produce NaN or Infinity");
        return;
    };
    let text = format_human(&sum);
    shard.set(key, &text, Ttl::Keep, &mut now);
    shard.with(key, &mut now, |e| {
        if let Some(e) = e {
            e.text = true;
        }
    });
    reply::bulk(out, &text);
}
