//! Command execution: one parsed command in, one reply appended to `out`.
//!
//! Replies are worded as Redis 7 words them. Errors from commands are ordinary replies;
//! the connection stays open (only the parser's protocol errors close it).

use std::time::{Duration, Instant};

use super::Shared;
use super::keyspace::{Keyspace, Now, Ttl};
use super::parse::parse_i64;
use super::reply::{self, NIL, NOT_INTEGER, OK, ONE, OVERFLOW, PONG, SYNTAX_ERR, ZERO};
use super::{keys, strings};

/// The arguments of one command, as ranges into a buffer (the connection's input for
/// multibulk commands, the parser's scratch buffer for inline ones).
#[derive(Debug, Clone, Copy)]
pub(super) struct Args<'a> {
    buf: &'a [u8],
    ranges: &'a [(usize, usize)],
}

impl<'a> Args<'a> {
    /// Arguments `ranges` of `buf`.
    pub(super) fn new(buf: &'a [u8], ranges: &'a [(usize, usize)]) -> Self {
        Args { buf, ranges }
    }

    /// Number of arguments, the command name included.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Argument `i` (an empty slice if out of range, so no index can panic).
    #[inline]
    pub(super) fn get(&self, i: usize) -> &'a [u8] {
        self.ranges.get(i).and_then(|&(s, e)| self.buf.get(s..e)).unwrap_or(&[])
    }
}

/// A connection's client state for the length of one call: unpacked from the session
/// (slot, database) and the thread's scratch (the command counter), written back after.
#[derive(Debug, Default)]
pub(super) struct Client {
    /// The session's slot in the registry `CLIENT LIST` reads (`client.rs`).
    pub(super) slot: u32,
    /// The selected database (`SELECT`).
    pub(super) db: usize,
    /// A command's reply would have exceeded `max_reply`: nothing was appended, and the
    /// session ends with an `output_limit` error.
    pub(super) reply_refused: bool,
    /// The last command run: 1 + its index in [`SPECS`], or 0 for an unknown one (for
    /// `CLIENT LIST`'s `cmd=`).
    pub(super) cmd: u8,
    /// Commands executed on this thread, to run a small expiry step every `STEP_EVERY`
    /// of them.
    pub(super) executed: u32,
}

/// Commands between two small active-expiry steps of a session.
const STEP_EVERY: u32 = 256;

macro_rules! commands {
    ($($variant:ident $name:literal $arity:literal,)*) => {
        /// A supported command.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(super) enum Cmd { $($variant,)* }

        /// Name and arity (Redis convention: `n` exactly n arguments, `-n` at least n,
        /// the command name counted) of each command, in [`Cmd`] order.
        pub(super) const SPECS: &[(Cmd, &[u8], i32)] = &[$((Cmd::$variant, $name, $arity),)*];

        /// The command named `lower` (lowercase).
        #[inline]
        fn lookup_lower(lower: &[u8]) -> Option<Cmd> {
            match lower {
                $($name => Some(Cmd::$variant),)*
                _ => None,
            }
        }
    };
}

commands! {
    Get b"get" 2,
    Set b"set" -3,
    Ping b"ping" -1,
    Incr b"incr" 2,
    Decr b"decr" 2,
    IncrBy b"incrby" 3,
    DecrBy b"decrby" 3,
    MGet b"mget" -2,
    MSet b"mset" -3,
    MSetNx b"msetnx" -3,
    Del b"del" -2,
    Unlink b"unlink" -2,
    Exists b"exists" -2,
    Echo b"echo" 2,
    GetSet b"getset" 3,
    GetDel b"getdel" 2,
    SetNx b"setnx" 3,
    SetEx b"setex" 4,
    PSetEx b"psetex" 4,
    Append b"append" 3,
    StrLen b"strlen" 2,
    Expire b"expire" -3,
    PExpire b"pexpire" -3,
    Ttl b"ttl" 2,
    PTtl b"pttl" 2,
    Persist b"persist" 2,
    Type b"type" 2,
    DbSize b"dbsize" 1,
    FlushDb b"flushdb" -1,
    FlushAll b"flushall" -1,
    Select b"select" 2,
    Quit b"quit" -1,
    Command b"command" -1,
    Config b"config" -2,
    Info b"info" -1,
    Client b"client" -2,
    GetEx b"getex" -2,
    GetRange b"getrange" 4,
    Substr b"substr" 4,
    SetRange b"setrange" 4,
    Lcs b"lcs" -3,
    SetBit b"setbit" 4,
    GetBit b"getbit" 3,
    BitCount b"bitcount" -2,
    BitPos b"bitpos" -3,
    IncrByFloat b"incrbyfloat" 3,
    ExpireAt b"expireat" -3,
    PExpireAt b"pexpireat" -3,
    ExpireTime b"expiretime" 2,
    PExpireTime b"pexpiretime" 2,
    Keys b"keys" 2,
    Scan b"scan" -2,
    RandomKey b"randomkey" 1,
    Rename b"rename" 3,
    RenameNx b"renamenx" 3,
    Copy b"copy" -3,
    Touch b"touch" -2,
    Object b"object" -2,
    Time b"time" 1,
    Move b"move" 3,
    SwapDb b"swapdb" 3,
    Function b"function" -2,
    Script b"script" -2,
    Debug b"debug" -2,
}

/// Looks a command up by name, case-insensitively, without allocating.
#[inline]
pub(super) fn lookup(name: &[u8]) -> Option<Cmd> {
    let mut buf = [0u8; 16];
    let lower = buf.get_mut(..name.len())?;
    for (d, s) in lower.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    lookup_lower(lower)
}

#[inline]
fn arity_ok(arity: i32, argc: usize) -> bool {
    if arity >= 0 { argc == arity as usize } else { argc >= arity.unsigned_abs() as usize }
}

pub(super) fn wrong_arity(out: &mut Vec<u8>, name: &[u8]) {
    out.extend_from_slice(b"-ERR wrong number of arguments for '");
    out.extend_from_slice(name);
    out.extend_from_slice(b"' command\r\n");
}

/// At most `n` bytes of `s`.
fn prefix(s: &[u8], n: usize) -> &[u8] {
    &s[..s.len().min(n)]
}

/// `-ERR unknown command 'name', with args beginning with: 'a' 'b' ` (Redis 7).
fn unknown_command(a: &Args<'_>, out: &mut Vec<u8>) {
    let mut msg = b"ERR unknown command '".to_vec();
    msg.extend_from_slice(prefix(a.get(0), 128));
    msg.extend_from_slice(b"', with args beginning with: ");
    let start = msg.len();
    let mut i = 1;
    while i < a.len() && msg.len() - start < 128 {
        let room = 128 - (msg.len() - start);
        msg.push(b'\'');
        msg.extend_from_slice(prefix(a.get(i), room));
        msg.extend_from_slice(b"' ");
        i += 1;
    }
    reply::error_sanitized(out, &msg);
}

/// `-ERR unknown subcommand 'sub'. Try CMD HELP.` (Redis 7).
pub(super) fn unknown_subcommand(a: &Args<'_>, out: &mut Vec<u8>) {
    let mut msg = b"ERR unknown subcommand '".to_vec();
    msg.extend_from_slice(prefix(a.get(1), 128));
    msg.extend_from_slice(b"'. Try ");
    msg.extend(a.get(0).iter().map(u8::to_ascii_uppercase));
    msg.extend_from_slice(b" HELP.");
    reply::error_sanitized(out, &msg);
}

pub(super) fn invalid_expire(out: &mut Vec<u8>, name: &[u8]) {
    out.extend_from_slice(b"-ERR invalid expire time in '");
    out.extend_from_slice(name);
    out.extend_from_slice(b"' command\r\n");
}

/// Executes one command with its arguments `a` (at least one: the name), appending its
/// reply to `out`. Returns true when the connection should close (`QUIT`). Inlined into
/// its one caller, the session's command loop.
#[inline(always)]
pub(super) fn execute(sh: &Shared, client: &mut Client, a: &Args<'_>, out: &mut Vec<u8>) -> bool {
    let Some(cmd) = lookup(a.get(0)) else {
        client.cmd = 0;
        unknown_command(a, out);
        return false;
    };
    client.cmd = cmd as u8 + 1;
    let (_, name, arity) = SPECS[cmd as usize];
    if !arity_ok(arity, a.len()) {
        wrong_arity(out, name);
        return false;
    }
    let ks = sh.db(client.db);
    client.executed = client.executed.wrapping_add(1);
    if client.executed.is_multiple_of(STEP_EVERY) {
        ks.sweep_step();
    }
    match cmd {
        Cmd::Get => {
            let key = a.get(1);
            let mut now = ks.clock();
            ks.shard(key).with(key, &mut now, |e| reply::opt_bulk(out, e.map(|e| &e.value[..])));
        }
        Cmd::Set => set(ks, a, out),
        Cmd::Ping => match a.len() {
            1 => reply::raw(out, PONG),
            2 => reply::bulk(out, a.get(1)),
            _ => wrong_arity(out, name),
        },
        Cmd::Incr => incr_by(ks, a.get(1), 1, out),
        Cmd::Decr => incr_by(ks, a.get(1), -1, out),
        Cmd::IncrBy | Cmd::DecrBy => match parse_i64(a.get(2)) {
            None => reply::raw(out, NOT_INTEGER),
            Some(i64::MIN) if cmd == Cmd::DecrBy => {
                reply::error(out, b"ERR decrement would overflow")
            }
            Some(v) => incr_by(ks, a.get(1), if cmd == Cmd::DecrBy { -v } else { v }, out),
        },
        Cmd::MGet => {
            let mut now = ks.clock();
            if a.len() > 2 {
                // The reply's size first (about 16 bytes of framing per value): one request
                // of a few KB could otherwise ask for gigabytes.
                let mut size = 0usize;
                for i in 1..a.len() {
                    let key = a.get(i);
                    let v = ks.shard(key).with(key, &mut now, |e| e.map_or(0, |e| e.value.len()));
                    size = size.saturating_add(v + 16);
                }
                if size > sh.cfg.max_reply {
                    client.reply_refused = true;
                    return true;
                }
            }
            reply::array(out, a.len() - 1);
            for i in 1..a.len() {
                let key = a.get(i);
                ks.shard(key)
                    .with(key, &mut now, |e| reply::opt_bulk(out, e.map(|e| &e.value[..])));
            }
        }
        Cmd::MSet | Cmd::MSetNx => {
            if a.len().is_multiple_of(2) {
                wrong_arity(out, name);
                return false;
            }
            let mut now = ks.clock();
            if cmd == Cmd::MSetNx
                && (1..a.len()).step_by(2).any(|i| ks.shard(a.get(i)).contains(a.get(i), &mut now))
            {
                reply::raw(out, ZERO);
                return false;
            }
            for i in (1..a.len()).step_by(2) {
                ks.shard(a.get(i)).set(a.get(i), a.get(i + 1), Ttl::Clear, &mut now);
            }
            reply::raw(out, if cmd == Cmd::MSet { OK } else { ONE });
        }
        Cmd::Del | Cmd::Unlink | Cmd::Exists => {
            let mut now = ks.clock();
            let mut n = 0;
            for i in 1..a.len() {
                let key = a.get(i);
                let mut shard = ks.shard(key);
                let hit = if cmd == Cmd::Exists {
                    shard.contains(key, &mut now)
                } else {
                    shard.delete_live(key, &mut now)
                };
                n += i64::from(hit);
            }
            reply::int(out, n);
        }
        Cmd::Echo => reply::bulk(out, a.get(1)),
        Cmd::GetSet => {
            let (key, mut now) = (a.get(1), ks.clock());
            let mut shard = ks.shard(key);
            shard.with(key, &mut now, |e| reply::opt_bulk(out, e.map(|e| &e.value[..])));
            shard.set(key, a.get(2), Ttl::Clear, &mut now);
        }
        Cmd::GetDel => {
            let (key, mut now) = (a.get(1), ks.clock());
            let old = ks.shard(key).remove(key);
            match old {
                Some(e) if e.expire().is_none_or(|d| now.get() < d) => reply::bulk(out, &e.value),
                _ => reply::raw(out, NIL),
            }
        }
        Cmd::SetNx => {
            let (key, mut now) = (a.get(1), ks.clock());
            let mut shard = ks.shard(key);
            if shard.contains(key, &mut now) {
                reply::raw(out, ZERO);
            } else {
                shard.set(key, a.get(2), Ttl::Clear, &mut now);
                reply::raw(out, ONE);
            }
        }
        Cmd::SetEx | Cmd::PSetEx => {
            let unit = if cmd == Cmd::SetEx { Unit::Ex } else { Unit::Px };
            let mut now = ks.clock();
            if let Some(d) = deadline(ks, a.get(2), unit, name, &mut now, out) {
                ks.shard(a.get(1)).set(a.get(1), a.get(3), Ttl::At(d), &mut now);
                reply::raw(out, OK);
            }
        }
        Cmd::Append => {
            let (key, value, mut now) = (a.get(1), a.get(2), ks.clock());
            let max = sh.cfg.max_bulk;
            let r = ks.shard(key).upsert(
                key,
                &mut now,
                |e| {
                    if e.value.len().saturating_add(value.len()) > max {
                        return None;
                    }
                    e.value.extend_from_slice(value);
                    e.raw = true;
                    Some(e.value.len())
                },
                || value.to_vec(),
            );
            match r {
                None => reply::int(out, value.len() as i64),
                Some(Some(len)) => reply::int(out, len as i64),
                Some(None) => reply::error(
                    out,
                    b"ERR string exceeds maximum allowed size (proto-max-bulk-len)",
                ),
            }
        }
        Cmd::StrLen => {
            let (key, mut now) = (a.get(1), ks.clock());
            let len = ks.shard(key).with(key, &mut now, |e| e.map_or(0, |e| e.value.len()));
            reply::int(out, len as i64);
        }
        Cmd::Expire => expire(ks, a, Unit::Ex, name, out),
        Cmd::PExpire => expire(ks, a, Unit::Px, name, out),
        Cmd::Ttl | Cmd::PTtl => {
            let (key, mut now) = (a.get(1), ks.clock());
            let found = ks.shard(key).with(key, &mut now, |e| e.map(|e| e.expire()));
            let ms = match found {
                None => -2,
                Some(None) => -1,
                Some(Some(d)) => ceil_ms(d.saturating_duration_since(now.get())),
            };
            reply::int(out, if cmd == Cmd::Ttl && ms >= 0 { (ms + 500) / 1000 } else { ms });
        }
        Cmd::Persist => {
            let (key, mut now) = (a.get(1), ks.clock());
            let mut shard = ks.shard(key);
            let had = shard.with(key, &mut now, |e| e.is_some_and(|e| e.expire().is_some()));
            if had {
                shard.set_expire(key, None);
            }
            reply::int(out, i64::from(had));
        }
        Cmd::Type => {
            let (key, mut now) = (a.get(1), ks.clock());
            let live = ks.shard(key).contains(key, &mut now);
            reply::simple(out, if live { b"string" } else { b"none" });
        }
        Cmd::DbSize => reply::int(out, ks.len() as i64),
        Cmd::FlushDb | Cmd::FlushAll => {
            let opt_ok =
                |o: &[u8]| o.eq_ignore_ascii_case(b"async") || o.eq_ignore_ascii_case(b"sync");
            if a.len() > 2 || (a.len() == 2 && !opt_ok(a.get(1))) {
                reply::raw(out, SYNTAX_ERR);
            } else {
                if cmd == Cmd::FlushAll {
                    sh.dbs.iter().for_each(Keyspace::clear);
                } else {
                    ks.clear();
                }
                reply::raw(out, OK);
            }
        }
        Cmd::Select => {
            if let Some(db) = db_arg(a.get(1), out) {
                client.db = db;
                super::client::selected(sh, client);
                reply::raw(out, OK);
            }
        }
        Cmd::Quit => {
            reply::raw(out, OK);
            return true;
        }
        Cmd::Command => command(a, out),
        Cmd::Config => config(sh, a, out),
        Cmd::Info => info(sh, a, out),
        Cmd::Client => super::client::command(sh, client, a, out),
        Cmd::GetEx => strings::getex(ks, a, out),
        Cmd::GetRange | Cmd::Substr => strings::getrange(ks, a, out),
        Cmd::SetRange => strings::setrange(ks, a, sh.cfg.max_bulk, out),
        Cmd::Lcs => strings::lcs(ks, a, sh.cfg.max_bulk, out),
        Cmd::SetBit => strings::setbit(ks, a, sh.cfg.max_bulk, out),
        Cmd::GetBit => strings::getbit(ks, a, sh.cfg.max_bulk, out),
        Cmd::BitCount => strings::bitcount(ks, a, out),
        Cmd::BitPos => strings::bitpos(ks, a, out),
        Cmd::IncrByFloat => strings::incrbyfloat(ks, a, out),
        Cmd::ExpireAt => expire(ks, a, Unit::ExAt, name, out),
        Cmd::PExpireAt => expire(ks, a, Unit::PxAt, name, out),
        Cmd::ExpireTime => keys::expiretime(ks, a, false, out),
        Cmd::PExpireTime => keys::expiretime(ks, a, true, out),
        Cmd::Keys => keys::keys(ks, a, out),
        Cmd::Scan => keys::scan(ks, a, out),
        Cmd::RandomKey => keys::randomkey(ks, out),
        Cmd::Rename => keys::rename(ks, a, false, out),
        Cmd::RenameNx => keys::rename(ks, a, true, out),
        Cmd::Copy => keys::copy(sh, client.db, a, out),
        Cmd::Move => keys::move_key(sh, client.db, a, out),
        Cmd::SwapDb => keys::swapdb(sh, a, out),
        Cmd::Function | Cmd::Script | Cmd::Debug => admin(cmd, a, out),
        Cmd::Touch => keys::touch(ks, a, out),
        Cmd::Object => keys::object(ks, a, out),
        Cmd::Time => keys::time(out),
    }
    false
}

/// Reads a database number as Redis's `getIntFromObjectOrReply` and `selectDb` do,
/// replying the error (not an integer; outside `int`; not a database) and returning None.
pub(super) fn db_arg(arg: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let Some(v) = parse_i64(arg) else {
        reply::raw(out, NOT_INTEGER);
        return None;
    };
    let Ok(v) = i32::try_from(v) else {
        reply::error(
            out,
            b"ERR value is out of range, value must between -2147483648 and 2147483647",
        );
        return None;
    };
    let db = db_index(v);
    if db.is_none() {
        reply::error(out, b"ERR DB index is out of range");
    }
    db
}

/// A database number if it is in range.
pub(super) fn db_index(db: i32) -> Option<usize> {
    usize::try_from(db).ok().filter(|&d| d < super::DATABASES)
}

/// Milliseconds in `d`, rounded up.
fn ceil_ms(d: Duration) -> i64 {
    let ms = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000));
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// How an expire argument is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unit {
    /// Seconds from now.
    Ex,
    /// Milliseconds from now.
    Px,
    /// Unix time in seconds.
    ExAt,
    /// Unix time in milliseconds.
    PxAt,
}

/// Reads a `SET`/`SETEX`/`GETEX` expire argument into a deadline, or replies the error
/// Redis gives (not an integer; `<= 0` or overflowing: invalid expire time) and returns
/// None. A Unix time in the past gives a deadline already reached.
pub(super) fn deadline(
    ks: &Keyspace,
    arg: &[u8],
    unit: Unit,
    name: &[u8],
    now: &mut Now<'_>,
    out: &mut Vec<u8>,
) -> Option<Instant> {
    let Some(v) = parse_i64(arg) else {
        reply::raw(out, NOT_INTEGER);
        return None;
    };
    let seconds = matches!(unit, Unit::Ex | Unit::ExAt);
    if v <= 0 || (seconds && v > i64::MAX / 1000) {
        invalid_expire(out, name);
        return None;
    }
    let ms = if seconds { v * 1000 } else { v };
    let d = match unit {
        Unit::Ex | Unit::Px => {
            let t = now.get();
            if ms > i64::MAX - ks.unix_ms_of(t) {
                invalid_expire(out, name);
                return None;
            }
            t.checked_add(Duration::from_millis(ms as u64))
        }
        Unit::ExAt | Unit::PxAt => ks.instant_of_unix_ms(ms),
    };
    if d.is_none() {
        invalid_expire(out, name);
    }
    d
}

/// The expire option `EX`/`PX`/`EXAT`/`PXAT` at `a[j]`, with its argument, for `SET` and
/// `GETEX`: None when `a[j]` is not one, has no argument, follows `blocked` (`KEEPTTL` or
/// `PERSIST`), or follows an expire option of another unit.
pub(super) fn expire_opt<'a>(
    a: &Args<'a>,
    j: usize,
    blocked: bool,
    expire: Option<(Unit, &[u8])>,
) -> Option<(Unit, &'a [u8])> {
    let opt = a.get(j);
    let has_next = j + 1 < a.len();
    [(&b"ex"[..], Unit::Ex), (b"px", Unit::Px), (b"exat", Unit::ExAt), (b"pxat", Unit::PxAt)]
        .into_iter()
        .find(|(n, _)| opt.eq_ignore_ascii_case(n))
        .map(|x| x.1)
        .filter(|&u| !blocked && has_next && expire.is_none_or(|(e, _)| e == u))
        .map(|u| (u, a.get(j + 1)))
}

/// `SET key value [NX | XX] [GET] [EX s | PX ms | EXAT ts | PXAT ms-ts | KEEPTTL]`, with
/// Redis 7's option rules.
fn set(ks: &Keyspace, a: &Args<'_>, out: &mut Vec<u8>) {
    let (key, value) = (a.get(1), a.get(2));
    let (mut nx, mut xx, mut get, mut keepttl) = (false, false, false, false);
    let mut expire: Option<(Unit, &[u8])> = None;
    let mut j = 3;
    while j < a.len() {
        let opt = a.get(j);
        if opt.eq_ignore_ascii_case(b"nx") && !xx {
            nx = true;
        } else if opt.eq_ignore_ascii_case(b"xx") && !nx {
            xx = true;
        } else if opt.eq_ignore_ascii_case(b"get") {
            get = true;
        } else if opt.eq_ignore_ascii_case(b"keepttl") && expire.is_none() {
            keepttl = true;
        } else if let Some(e) = expire_opt(a, j, keepttl, expire) {
            expire = Some(e);
            j += 1;
        } else {
            reply::raw(out, SYNTAX_ERR);
            return;
        }
        j += 1;
    }
    let mut now = ks.clock();
    let ttl = match expire {
        None if keepttl => Ttl::Keep,
        None => Ttl::Clear,
        Some((u, arg)) => match deadline(ks, arg, u, b"set", &mut now, out) {
            Some(d) => Ttl::At(d),
            None => return,
        },
    };
    let mut shard = ks.shard(key);
    if get || nx || xx {
        let found = shard.with(key, &mut now, |e| {
            if get {
                reply::opt_bulk(out, e.as_ref().map(|e| &e.value[..]));
            }
            e.is_some()
        });
        if (nx && found) || (xx && !found) {
            if !get {
                reply::raw(out, NIL);
            }
            return;
        }
    }
    shard.set(key, value, ttl, &mut now);
    if !get {
        reply::raw(out, OK);
    }
}

/// `INCR`/`DECR`/`INCRBY`/`DECRBY`: adds `delta`, keeping the deadline.
fn incr_by(ks: &Keyspace, key: &[u8], delta: i64, out: &mut Vec<u8>) {
    enum R {
        Value(i64),
        NotInt,
        Overflow,
    }
    let mut now = ks.clock();
    let r = ks.shard(key).upsert(
        key,
        &mut now,
        |e| match parse_i64(&e.value) {
            None => R::NotInt,
            Some(old) => match old.checked_add(delta) {
                None => R::Overflow,
                Some(v) => {
                    e.value.clear();
                    e.raw = false;
                    e.text = false;
                    reply::decimal(&mut e.value, v);
                    R::Value(v)
                }
            },
        },
        || {
            let mut v = Vec::with_capacity(20);
            reply::decimal(&mut v, delta);
            v
        },
    );
    match r.unwrap_or(R::Value(delta)) {
        R::Value(v) => reply::int(out, v),
        R::NotInt => reply::raw(out, NOT_INTEGER),
        R::Overflow => reply::raw(out, OVERFLOW),
    }
}

/// `EXPIRE`/`PEXPIRE`/`EXPIREAT`/`PEXPIREAT key time [NX | XX | GT | LT]` (Redis 7).
fn expire(ks: &Keyspace, a: &Args<'_>, unit: Unit, name: &[u8], out: &mut Vec<u8>) {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for j in 3..a.len() {
        let opt = a.get(j);
        if opt.eq_ignore_ascii_case(b"nx") {
            nx = true;
        } else if opt.eq_ignore_ascii_case(b"xx") {
            xx = true;
        } else if opt.eq_ignore_ascii_case(b"gt") {
            gt = true;
        } else if opt.eq_ignore_ascii_case(b"lt") {
            lt = true;
        } else {
            let mut msg = b"ERR Unsupported option ".to_vec();
            msg.extend_from_slice(opt);
            reply::error_sanitized(out, &msg);
            return;
        }
    }
    if nx && (xx || gt || lt) {
        reply::error(out, b"ERR NX and XX, GT or LT options at the same time are not compatible");
        return;
    }
    if gt && lt {
        reply::error(out, b"ERR GT and LT options at the same time are not compatible");
        return;
    }
    let Some(mut when) = parse_i64(a.get(2)) else {
        reply::raw(out, NOT_INTEGER);
        return;
    };
    if matches!(unit, Unit::Ex | Unit::ExAt) {
        if !(i64::MIN / 1000..=i64::MAX / 1000).contains(&when) {
            invalid_expire(out, name);
            return;
        }
        when *= 1000;
    }
    let mut now = ks.clock();
    let now_t = now.get();
    let now_ms = ks.unix_ms_of(now_t);
    let relative = matches!(unit, Unit::Ex | Unit::Px);
    let base = if relative { now_ms } else { 0 };
    if when > i64::MAX - base {
        invalid_expire(out, name);
        return;
    }
    let rel_ms = when;
    when += base;
    let key = a.get(1);
    let mut shard = ks.shard(key);
    let Some(current) = shard.with(key, &mut now, |e| e.map(|e| e.expire())) else {
        reply::raw(out, ZERO);
        return;
    };
    let current_ms = current.map(|d| ks.unix_ms_of(d));
    let refused = (nx && current.is_some())
        || (xx && current.is_none())
        || (gt && current_ms.is_none_or(|c| when <= c))
        || (lt && current_ms.is_some_and(|c| when >= c));
    if refused {
        reply::raw(out, ZERO);
        return;
    }
    if when <= now_ms {
        shard.remove(key);
        reply::raw(out, ONE);
        return;
    }
    let d = if relative {
        now_t.checked_add(Duration::from_millis(rel_ms as u64))
    } else {
        ks.instant_of_unix_ms(when)
    };
    match d {
        Some(d) => {
            shard.set_expire(key, Some(d));
            reply::raw(out, ONE);
        }
        None => invalid_expire(out, name),
    }
}

/// `COMMAND`, `COMMAND COUNT|DOCS|INFO|LIST`. Tools send these on connect; the detailed
/// command metadata Redis returns is not provided (empty arrays, nulls).
fn command(a: &Args<'_>, out: &mut Vec<u8>) {
    if a.len() == 1 {
        reply::raw(out, reply::EMPTY_ARRAY);
        return;
    }
    let sub = a.get(1);
    if sub.eq_ignore_ascii_case(b"count") {
        if a.len() != 2 {
            return wrong_arity(out, b"command|count");
        }
        reply::int(out, SPECS.len() as i64);
    } else if sub.eq_ignore_ascii_case(b"docs") {
        reply::raw(out, reply::EMPTY_ARRAY);
    } else if sub.eq_ignore_ascii_case(b"info") {
        reply::array(out, a.len() - 2);
        for _ in 2..a.len() {
            reply::raw(out, reply::NIL_ARRAY);
        }
    } else if sub.eq_ignore_ascii_case(b"list") {
        reply::array(out, SPECS.len());
        for (_, name, _) in SPECS {
            reply::bulk(out, name);
        }
    } else {
        unknown_subcommand(a, out);
    }
}

/// Glob matching as Redis's `stringmatchlen` (`*`, `?`, `[a-z]`, `[^x]`, `\\x`),
/// ASCII case-insensitively when `nocase` (`CONFIG GET`), exactly otherwise (`KEYS`,
/// `SCAN`).
///
/// Linear-space, `O(pattern × subject)` time: the classic two-pointer wildcard match.
/// Every atom other than `*` matches exactly one byte, so on a mismatch it suffices to
/// retry from the most recent `*`, letting it swallow one more byte; earlier stars never
/// need revisiting. (A recursive matcher is exponential in the number of stars: the
/// Redis CVE-2022-36021 class.)
pub(super) fn glob_match(pat: &[u8], s: &[u8], nocase: bool) -> bool {
    let (mut p, mut i) = (0, 0);
    // (pattern index after the last star, subject index that star swallowed up to)
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if pat.get(p) == Some(&b'*') {
            while pat.get(p) == Some(&b'*') {
                p += 1;
            }
            if p == pat.len() {
                return true;
            }
            star = Some((p, i));
            continue;
        }
        if p < pat.len() {
            let (ok, next) = match_atom(pat, p, s[i], nocase);
            if ok {
                p = next;
                i += 1;
                continue;
            }
        }
        match star {
            Some((after, swallowed)) => {
                star = Some((after, swallowed + 1));
                p = after;
                i = swallowed + 1;
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// Whether the single-byte atom at `pat[p]` (not `*`) matches `c`, and where the next
/// atom starts.
fn match_atom(pat: &[u8], p: usize, c: u8, nocase: bool) -> (bool, usize) {
    let lower = |b: &u8| if nocase { b.to_ascii_lowercase() } else { *b };
    match &pat[p..] {
        [b'?', ..] => (true, p + 1),
        [b'[', rest @ ..] => {
            let (negate, mut q) = match rest {
                [b'^', r @ ..] => (true, r),
                r => (false, r),
            };
            let mut matched = false;
            loop {
                match q {
                    [] => break,
                    [b']', r @ ..] => {
                        q = r;
                        break;
                    }
                    [b'\\', x, r @ ..] => {
                        matched |= lower(x) == lower(&c);
                        q = r;
                    }
                    [lo, b'-', hi, r @ ..] => {
                        let (lo, hi) = (lower(lo).min(lower(hi)), lower(lo).max(lower(hi)));
                        matched |= (lo..=hi).contains(&lower(&c));
                        q = r;
                    }
                    [x, r @ ..] => {
                        matched |= lower(x) == lower(&c);
                        q = r;
                    }
                }
            }
            (matched != negate, pat.len() - q.len())
        }
        [b'\\', x, ..] => (lower(x) == lower(&c), p + 2),
        [x, ..] => (lower(x) == lower(&c), p + 1),
        [] => (false, p),
    }
}

/// `CONFIG GET pattern...` over a few read-only parameters; `CONFIG SET` is refused;
/// `CONFIG RESETSTAT` is accepted.
fn config(sh: &Shared, a: &Args<'_>, out: &mut Vec<u8>) {
    let sub = a.get(1);
    if sub.eq_ignore_ascii_case(b"get") {
        if a.len() < 3 {
            return wrong_arity(out, b"config|get");
        }
        let params = config_params(sh);
        let hits: Vec<&(&str, String)> = params
            .iter()
            .filter(|(n, _)| (2..a.len()).any(|i| glob_match(a.get(i), n.as_bytes(), true)))
            .collect();
        reply::array(out, hits.len() * 2);
        for (n, v) in hits {
            reply::bulk(out, n.as_bytes());
            reply::bulk(out, v.as_bytes());
        }
    } else if sub.eq_ignore_ascii_case(b"set") {
        if a.len() < 4 {
            return wrong_arity(out, b"config|set");
        }
        if !a.len().is_multiple_of(2) {
            return reply::raw(out, SYNTAX_ERR);
        }
        // Settings are fixed at start: setting one to its current value (what test
        // harnesses do: `save ""`, `appendonly no`) succeeds, changing one fails.
        let params = config_params(sh);
        for i in (2..a.len()).step_by(2) {
            let (name, value) = (a.get(i), a.get(i + 1));
            let Some((n, current)) =
                params.iter().find(|(n, _)| name.eq_ignore_ascii_case(n.as_bytes()))
            else {
                let mut msg =
                    b"ERR Unknown option or number of arguments for CONFIG SET - '".to_vec();
                msg.extend_from_slice(prefix(name, 128));
                msg.push(b'\'');
                return reply::error_sanitized(out, &msg);
            };
            let why: Option<&str> = if *n == "databases" {
                Some("can't set immutable config")
            } else if value != current.as_bytes() {
                Some("evloop cannot change this setting at run time")
            } else {
                None
            };
            if let Some(why) = why {
                let msg =
                    format!("ERR CONFIG SET failed (possibly related to argument '{n}') - {why}");
                return reply::error(out, msg.as_bytes());
            }
        }
        reply::raw(out, OK);
    } else if sub.eq_ignore_ascii_case(b"resetstat") {
        if a.len() != 2 {
            return wrong_arity(out, b"config|resetstat");
        }
        reply::raw(out, OK);
    } else {
        unknown_subcommand(a, out);
    }
}

/// The parameters `CONFIG GET` reports, with their values.
fn config_params(sh: &Shared) -> [(&'static str, String); 9] {
    [
        ("save", String::new()),
        ("appendonly", "no".into()),
        ("databases", super::DATABASES.to_string()),
        ("maxmemory", "0".into()),
        ("maxmemory-policy", "noeviction".into()),
        ("maxclients", "10000".into()),
        ("timeout", "0".into()),
        ("proto-max-bulk-len", sh.cfg.max_bulk.to_string()),
        ("client-query-buffer-limit", sh.cfg.max_request.to_string()),
    ]
}

/// `FUNCTION FLUSH|LIST`, `SCRIPT FLUSH` (there are no functions or scripts: flushing
/// succeeds, listing is empty) and `DEBUG` (refused as by a Redis whose
/// `enable-debug-command` is `no`).
fn admin(cmd: Cmd, a: &Args<'_>, out: &mut Vec<u8>) {
    let sub = a.get(1);
    let sync_opt = |o: &[u8]| o.eq_ignore_ascii_case(b"sync") || o.eq_ignore_ascii_case(b"async");
    match cmd {
        Cmd::Debug => reply::error(
            out,
            b"ERR DEBUG command not allowed. If the enable-debug-command option is set to \
              \"local\", you can run it from a local connection, otherwise you need to set \
              this option in the configuration file, and then restart the server.",
        ),
        Cmd::Function if sub.eq_ignore_ascii_case(b"flush") => match a.len() {
            2 => reply::raw(out, OK),
            3 if sync_opt(a.get(2)) => reply::raw(out, OK),
            3 => reply::error(out, b"ERR FUNCTION FLUSH only supports SYNC|ASYNC option"),
            _ => {
                let mut msg = b"ERR unknown subcommand or wrong number of arguments for '".to_vec();
                msg.extend_from_slice(prefix(sub, 128));
                msg.extend_from_slice(b"'. Try FUNCTION HELP.");
                reply::error_sanitized(out, &msg);
            }
        },
        Cmd::Function if sub.eq_ignore_ascii_case(b"list") => reply::raw(out, reply::EMPTY_ARRAY),
        Cmd::Script if sub.eq_ignore_ascii_case(b"flush") => {
            if a.len() == 2 || (a.len() == 3 && sync_opt(a.get(2))) {
                reply::raw(out, OK);
            } else {
                reply::error(out, b"ERR SCRIPT FLUSH only support SYNC|ASYNC option");
            }
        }
        _ => unknown_subcommand(a, out),
    }
}

/// `INFO [section...]`: the `server`, `clients`, `stats` and `keyspace` sections.
fn info(sh: &Shared, a: &Args<'_>, out: &mut Vec<u8>) {
    let all = a.len() == 1
        || (1..a.len()).any(|i| {
            [&b"all"[..], b"default", b"everything"]
                .iter()
                .any(|s| a.get(i).eq_ignore_ascii_case(s))
        });
    let want = |s: &str| all || (1..a.len()).any(|i| a.get(i).eq_ignore_ascii_case(s.as_bytes()));
    let mut sections: Vec<String> = Vec::new();
    if want("server") {
        let up = sh.started.elapsed().as_secs();
        sections.push(format!(
            "# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\nos:{} {}\r\narch_bits:{}\r\n\
             multiplexing_api:evloop\r\nprocess_id:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\n",
            std::env::consts::OS,
            std::env::consts::ARCH,
            usize::BITS,
            std::process::id(),
            up,
            up / 86400
        ));
    }
    if want("clients") {
        sections.push(format!(
            "# Clients\r\nconnected_clients:{}\r\n",
            sh.clients.load(std::sync::atomic::Ordering::Relaxed)
        ));
    }
    if want("stats") {
        sections.push(format!(
            "# Stats\r\ntotal_connections_received:{}\r\n",
            sh.connections.load(std::sync::atomic::Ordering::Relaxed)
        ));
    }
    if want("keyspace") {
        let mut s = String::from("# Keyspace\r\n");
        for i in 0..super::DATABASES {
            let (keys, expires) = (sh.db(i).len(), sh.db(i).expires());
            if keys > 0 {
                s.push_str(&format!("db{i}:keys={keys},expires={expires},avg_ttl=0\r\n"));
            }
        }
        sections.push(s);
    }
    reply::bulk(out, sections.join("\r\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_in_enum_order_and_found_by_name() {
        for (i, &(cmd, name, _)) in SPECS.iter().enumerate() {
            assert_eq!(cmd as usize, i, "{cmd:?}");
            assert_eq!(lookup(name), Some(cmd));
            assert_eq!(lookup(&name.to_ascii_uppercase()), Some(cmd));
            assert!(name.len() <= 16);
        }
        assert_eq!(lookup(b"GeT"), Some(Cmd::Get));
        assert_eq!(lookup(b"nope"), None);
        assert_eq!(lookup(b""), None);
        assert_eq!(lookup(&[b'a'; 100]), None);
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"*", b"save", true));
        assert!(glob_match(b"SAVE", b"save", true));
        assert!(glob_match(b"s?ve", b"save", true));
        assert!(glob_match(b"max*", b"maxmemory", true));
        assert!(glob_match(b"*memory*", b"maxmemory-policy", true));
        assert!(glob_match(b"[a-t]ave", b"save", true));
        assert!(!glob_match(b"[^s]ave", b"save", true));
        assert!(glob_match(b"\\save", b"save", true));
        assert!(!glob_match(b"sav", b"save", true));
        assert!(!glob_match(b"save?", b"save", true));
        assert!(glob_match(b"a**b", b"axxb", true));
        // More of Redis's semantics, and the backtracking a greedy matcher needs.
        assert!(glob_match(b"", b"", true));
        assert!(!glob_match(b"", b"a", true));
        assert!(glob_match(b"***", b"", true));
        assert!(!glob_match(b"?", b"", true));
        assert!(glob_match(b"*a", b"aaa", true));
        assert!(glob_match(b"*ab*ab", b"xabyabab", true));
        assert!(!glob_match(b"*ab*ab", b"xabyaba", true));
        assert!(glob_match(b"a*b*c", b"aXbYbZc", true));
        assert!(!glob_match(b"a*b*c", b"aXbYbZ", true));
        assert!(glob_match(b"[abc]*", b"Bxx", true));
        assert!(glob_match(b"[^abc]?", b"dx", true));
        assert!(!glob_match(b"[^abc]?", b"ax", true));
        assert!(glob_match(b"[z-a]", b"m", true), "reversed ranges work");
        assert!(glob_match(b"[\\]]", b"]", true), "escaped ] inside a class");
        assert!(glob_match(b"\\*", b"*", true));
        assert!(!glob_match(b"\\*", b"x", true), "an escaped star is literal");
        assert!(glob_match(b"\\?x", b"?x", true));
        assert!(!glob_match(b"\\?x", b"ax", true));
        assert!(glob_match(b"*?*?", b"ab", true));
        assert!(!glob_match(b"*?*?*?", b"ab", true));
        assert!(glob_match(b"max*-polic?", b"MAXMEMORY-POLICY", true));
    }

    /// The pattern of CVE-2022-36021 (38 bytes) against long subjects: a recursive
    /// matcher takes exponential time here; the two-pointer one, microseconds.
    #[test]
    fn glob_is_not_exponential() {
        let pat = b"*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?Z";
        assert!(pat.len() >= 37);
        let start = std::time::Instant::now();
        for len in [20usize, 64, 1000, 10_000] {
            let subject = vec![b'a'; len];
            assert!(!glob_match(pat, &subject, true));
            let mut hit = subject.clone();
            hit.push(b'z');
            assert_eq!(glob_match(pat, &hit, true), len >= 18);
        }
        let took = start.elapsed();
        assert!(took < std::time::Duration::from_millis(200), "glob matching took {took:?}");
    }

    /// Same through the protocol: one CONFIG GET with 24 such patterns, as a client
    /// would send it, answers in a few milliseconds.
    #[test]
    fn config_get_with_many_stars_answers_fast() {
        use crate::proto::Protocol;
        let redis = crate::proto::resp::Redis::default();
        let mut s = redis.open();
        let pat = b"*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*?*Z";
        let mut req = Vec::new();
        req.extend_from_slice(format!("*{}\r\n", 2 + 24).as_bytes());
        for a in [&b"CONFIG"[..], b"GET"] {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        for _ in 0..24 {
            req.extend_from_slice(format!("${}\r\n", pat.len()).as_bytes());
            req.extend_from_slice(pat);
            req.extend_from_slice(b"\r\n");
        }
        let mut out = Vec::new();
        let start = std::time::Instant::now();
        let p = s.on_input(&req, &mut out).unwrap();
        let took = start.elapsed();
        assert_eq!((p.consumed, p.requests), (req.len(), 1));
        assert_eq!(out, b"*0\r\n", "no parameter ends in Z");
        assert!(took < std::time::Duration::from_millis(50), "CONFIG GET took {took:?}");
    }

    #[test]
    fn ceil_ms_rounds_up() {
        assert_eq!(ceil_ms(Duration::from_millis(5)), 5);
        assert_eq!(ceil_ms(Duration::from_micros(4001)), 5);
        assert_eq!(ceil_ms(Duration::ZERO), 0);
    }
}
