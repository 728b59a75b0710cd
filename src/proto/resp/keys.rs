//! Keyspace commands: `KEYS`, `SCAN`, `RANDOMKEY`, `RENAME`/`RENAMENX`, `COPY`, `MOVE`,
//! `SWAPDB`, `TOUCH`, `OBJECT`, `EXPIRETIME`/`PEXPIRETIME` and `TIME`, worded as Redis
//! 7.0 words them.
//!
//! Like the other multi-key commands, `RENAME`, `COPY` and `MOVE` lock one key's shard at
//! a time,
//! so another connection may briefly see neither or both keys (Redis runs them
//! atomically). `SCAN`'s cursor is described at [`Keyspace::scan`].

use std::time::{SystemTime, UNIX_EPOCH};

use super::Shared;
use super::commands::{Args, db_arg, db_index, glob_match, wrong_arity};
use super::keyspace::Keyspace;
use super::parse::parse_i64;
use super::reply::{self, NIL, NOT_INTEGER, OK, ONE, SYNTAX_ERR, ZERO};

/// Whether `key` matches the `KEYS`/`SCAN` pattern `pat` (case-sensitive, as Redis).
fn matches(pat: Option<&[u8]>, key: &[u8]) -> bool {
    pat.is_none_or(|p| glob_match(p, key, false))
}

/// `KEYS pattern`.
pub(super) fn keys(ks: &Keyspace, a: &Args<'_>, out: &mut Vec<u8>) {
    let pat = Some(a.get(1)).filter(|p| *p != b"*");
    let (mut body, mut n) = (Vec::new(), 0);
    ks.for_each_live(|k, _| {
        if matches(pat, k) {
            reply::bulk(&mut body, k);
            n += 1;
        }
    });
    reply::array(out, n);
    out.extend_from_slice(&body);
}

/// A cursor as Redis's `strtoul` reads it: optional sign, decimal digits, nothing else
/// (a minus wraps, as in C; an empty string is cursor 0).
fn parse_cursor(s: &[u8]) -> Option<u64> {
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if s.is_empty() {
        return Some(0);
    }
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(if neg { v.wrapping_neg() } else { v })
}

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`.
pub(super) fn scan(ks: &Keyspace, a: &Args<'_>, out: &mut Vec<u8>) {
    let Some(cursor) = parse_cursor(a.get(1)) else {
        reply::error(out, b"ERR invalid cursor");
        return;
    };
    let (mut count, mut pat, mut typ) = (10usize, None, None);
    let mut i = 2;
    while i < a.len() {
        let opt = a.get(i);
        let has_arg = i + 1 < a.len();
        if opt.eq_ignore_ascii_case(b"count") && has_arg {
            let Some(c) = parse_i64(a.get(i + 1)) else {
                reply::raw(out, NOT_INTEGER);
                return;
            };
            if c < 1 {
                reply::raw(out, SYNTAX_ERR);
                return;
            }
            count = usize::try_from(c).unwrap_or(usize::MAX);
        } else if opt.eq_ignore_ascii_case(b"match") && has_arg {
            pat = Some(a.get(i + 1)).filter(|p| *p != b"*");
        } else if opt.eq_ignore_ascii_case(b"type") && has_arg {
            typ = Some(a.get(i + 1));
        } else {
            reply::raw(out, SYNTAX_ERR);
            return;
        }
        i += 2;
    }
    let strings = typ.is_none_or(|t| t.eq_ignore_ascii_case(b"string"));
    let (mut body, mut n) = (Vec::new(), 0);
    let next = ks.scan(cursor, count, |k, _| {
        if strings && matches(pat, k) {
            reply::bulk(&mut body, k);
            n += 1;
        }
    });
    reply::array(out, 2);
    let mut digits = [0u8; 20];
    reply::bulk(out, crate::proto::digits(next, &mut digits));
    reply::array(out, n);
    out.extend_from_slice(&body);
}

/// `RANDOMKEY`.
pub(super) fn randomkey(ks: &Keyspace, out: &mut Vec<u8>) {
    reply::opt_bulk(out, ks.random_key().as_deref());
}

/// `RENAME`/`RENAMENX src dst`.
pub(super) fn rename(ks: &Keyspace, a: &Args<'_>, nx: bool, out: &mut Vec<u8>) {
    let (src, dst, mut now) = (a.get(1), a.get(2), ks.clock());
    if !ks.shard(src).contains(src, &mut now) {
        reply::error(out, b"ERR no such key");
        return;
    }
    if src == dst {
        reply::raw(out, if nx { ZERO } else { OK });
        return;
    }
    if nx && ks.shard(dst).contains(dst, &mut now) {
        reply::raw(out, ZERO);
        return;
    }
    let Some(entry) = ks.shard(src).take_live(src, &mut now) else {
        reply::error(out, b"ERR no such key");
        return;
    };
    ks.shard(dst).put(dst, entry);
    reply::raw(out, if nx { ONE } else { OK });
}

/// `COPY src dst [DB db] [REPLACE]`, from the selected database `db`.
pub(super) fn copy(sh: &Shared, db: usize, a: &Args<'_>, out: &mut Vec<u8>) {
    let mut replace = false;
    let mut dst_db = db;
    let mut j = 3;
    while j < a.len() {
        let opt = a.get(j);
        if opt.eq_ignore_ascii_case(b"replace") {
            replace = true;
        } else if opt.eq_ignore_ascii_case(b"db") && j + 1 < a.len() {
            match db_arg(a.get(j + 1), out) {
                Some(d) => dst_db = d,
                None => return,
            }
            j += 1;
        } else {
            reply::raw(out, SYNTAX_ERR);
            return;
        }
        j += 1;
    }
    let (src, dst) = (a.get(1), a.get(2));
    if db == dst_db && src == dst {
        reply::error(out, b"ERR source and destination objects are the same");
        return;
    }
    let (from, to) = (sh.db(db), sh.db(dst_db));
    let mut now = from.clock();
    let Some(entry) = from.shard(src).clone_live(src, &mut now) else {
        reply::raw(out, ZERO);
        return;
    };
    let mut now = to.clock();
    let mut shard = to.shard(dst);
    if !replace && shard.contains(dst, &mut now) {
        reply::raw(out, ZERO);
        return;
    }
    shard.put(dst, entry);
    reply::raw(out, ONE);
}

/// `MOVE key db`, from the selected database `db`.
pub(super) fn move_key(sh: &Shared, db: usize, a: &Args<'_>, out: &mut Vec<u8>) {
    let Some(dst_db) = db_arg(a.get(2), out) else {
        return;
    };
    if dst_db == db {
        reply::error(out, b"ERR source and destination objects are the same");
        return;
    }
    let key = a.get(1);
    let (from, to) = (sh.db(db), sh.db(dst_db));
    let mut now = from.clock();
    if !from.shard(key).contains(key, &mut now) {
        reply::raw(out, ZERO);
        return;
    }
    // One shard locked at a time (two MOVEs in opposite directions must not deadlock).
    let mut to_now = to.clock();
    if to.shard(key).contains(key, &mut to_now) {
        reply::raw(out, ZERO);
        return;
    }
    let taken = from.shard(key).take_live(key, &mut now);
    match taken {
        Some(entry) => {
            to.shard(key).put(key, entry);
            reply::raw(out, ONE);
        }
        None => reply::raw(out, ZERO),
    }
}

/// `SWAPDB a b`.
pub(super) fn swapdb(sh: &Shared, a: &Args<'_>, out: &mut Vec<u8>) {
    let index = |arg: &[u8]| parse_i64(arg).and_then(|v| i32::try_from(v).ok());
    let Some(x) = index(a.get(1)) else {
        reply::error(out, b"ERR invalid first DB index");
        return;
    };
    let Some(y) = index(a.get(2)) else {
        reply::error(out, b"ERR invalid second DB index");
        return;
    };
    match (db_index(x), db_index(y)) {
        (Some(x), Some(y)) => {
            sh.swap_dbs(x, y);
            reply::raw(out, OK);
        }
        _ => reply::error(out, b"ERR DB index is out of range"),
    }
}

/// `TOUCH key...`: the number of keys that exist.
pub(super) fn touch(ks: &Keyspace, a: &Args<'_>, out: &mut Vec<u8>) {
    let mut now = ks.clock();
    let n = (1..a.len()).filter(|&i| ks.shard(a.get(i)).contains(a.get(i), &mut now)).count();
    reply::int(out, n as i64);
}

/// `OBJECT ENCODING|REFCOUNT|IDLETIME|FREQ key`, `OBJECT HELP`.
pub(super) fn object(ks: &Keyspace, a: &Args<'_>, out: &mut Vec<u8>) {
    let sub = a.get(1);
    if sub.eq_ignore_ascii_case(b"help") && a.len() == 2 {
        const HELP: &[&[u8]] = &[
            b"OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            b"ENCODING <key>",
            b"    Return the kind of internal representation used in order to store the value",
            b"    associated with a <key>.",
            b"FREQ <key>",
            b"    Return the access frequency index of the <key>. The returned integer is",
            b"    proportional to the logarithm of the recent access frequency of the key.",
            b"IDLETIME <key>",
            b"    Return the idle time of the <key>, that is the approximated number of",
            b"    seconds elapsed since the last access to the key.",
            b"REFCOUNT <key>",
            b"    Return the number of references of the value associated with the specified",
            b"    <key>.",
            b"HELP",
            b"    Prints this help.",
        ];
        reply::array(out, HELP.len());
        HELP.iter().for_each(|l| reply::simple(out, l));
        return;
    }
    let known: &[(&[u8], &[u8])] = &[
        (b"encoding", b"object|encoding"),
        (b"refcount", b"object|refcount"),
        (b"idletime", b"object|idletime"),
        (b"freq", b"object|freq"),
    ];
    let Some(&(name, full)) = known.iter().find(|(n, _)| sub.eq_ignore_ascii_case(n)) else {
        super::commands::unknown_subcommand(a, out);
        return;
    };
    if a.len() != 3 {
        wrong_arity(out, full);
        return;
    }
    let (key, mut now) = (a.get(2), ks.clock());
    let found = ks.shard(key).with(key, &mut now, |e| {
        e.map(|e| {
            let enc = e.encoding();
            // Redis shares the objects of the integers 0..=9999 (`OBJ_SHARED_INTEGERS`),
            // reporting their refcount as `OBJ_SHARED_REFCOUNT`.
            let shared =
                enc == b"int" && parse_i64(&e.value).is_some_and(|v| (0..10_000).contains(&v));
            (enc, shared)
        })
    });
    let Some((enc, shared)) = found else {
        reply::raw(out, NIL);
        return;
    };
    match name {
        b"encoding" => reply::bulk(out, enc),
        b"refcount" => reply::int(out, if shared { i64::from(i32::MAX) } else { 1 }),
        b"idletime" => reply::raw(out, ZERO),
        _ => reply::error(
            out,
            b"ERR An LFU maxmemory policy is not selected, access frequency not tracked. \
              Please note that when switching between policies at runtime LRU and LFU data \
              will take some time to adjust.",
        ),
    }
}

/// `EXPIRETIME`/`PEXPIRETIME key`: the deadline as Unix time, -1 without one, -2 when
/// the key is missing.
pub(super) fn expiretime(ks: &Keyspace, a: &Args<'_>, ms: bool, out: &mut Vec<u8>) {
    let (key, mut now) = (a.get(1), ks.clock());
    let found = ks.shard(key).with(key, &mut now, |e| e.map(|e| e.expire()));
    let v = match found {
        None => -2,
        Some(None) => -1,
        Some(Some(d)) => {
            // Rounded as Redis computes it (no overflow near i64::MAX).
            let t = ks.unix_ms_of(d).max(0) as u64;
            (if ms { t } else { (t + 500) / 1000 }) as i64
        }
    };
    reply::int(out, v);
}

/// `TIME`: Unix seconds and microseconds.
pub(super) fn time(out: &mut Vec<u8>) {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut buf = [0u8; 20];
    reply::array(out, 2);
    reply::bulk(out, crate::proto::digits(d.as_secs(), &mut buf));
    reply::bulk(out, crate::proto::digits(u64::from(d.subsec_micros()), &mut buf));
}
