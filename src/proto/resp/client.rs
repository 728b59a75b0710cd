//! `CLIENT` (`ID`, `SETNAME`, `GETNAME`, `SETINFO`, `INFO`, `LIST`) and the registry of
//! live clients that `CLIENT LIST` reads.
//!
//! Every session is registered in the server's [`Registry`] when it is made, with the
//! addresses the engine gave (the client's address from a PROXY header when there was
//! one), its descriptor and its start time, and leaves it in
//! [`Protocol::closed`](crate::proto::Protocol::closed). A session keeps only the number
//! of its [`Slot`]; the slot (40 bytes, in chunks that never move) holds the client's id,
//! addresses (an IPv4 peer packed into 8 bytes, the local address as an index into a small
//! table of the server's local addresses), descriptor, clocks, last command and database.
//! What is rare is kept beside the slots, under the registry's mutex, only while it
//! exists: a client name, an IPv6 peer.
//!
//! What changes per command is kept cheap: once per call that ran commands, [`touch`]
//! stores the last command (its table index) and a coarse clock (the registry's, advanced
//! by the protocol's once-a-second [`tick`]) into two relaxed atomics of the session's own
//! slot: no lock, no clock read, no lookup. `CLIENT LIST`/`INFO` turn them into `cmd=` and
//! `idle=` when asked. The registry's mutex is taken only at connect, disconnect,
//! `SETNAME`/`GETNAME` and `CLIENT LIST`/`INFO`.
//!
//! Lines follow Redis 7's field order; fields this server has no notion of (buffers,
//! subscriptions, transactions) are reported as an idle Redis reports them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicU16, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use super::Shared;
use super::commands::{Args, Client, SPECS};
use super::reply::{self, OK};
use crate::proto::ConnInfo;

/// The slot number of a session that has none (the registry is full).
pub(super) const NO_SLOT: u32 = u32::MAX;

/// Slots per chunk, chunks per second-level table, second-level tables: 2^28 slots.
const CHUNK: usize = 1024;
const L2: usize = 256;
const L1: usize = 1024;

/// Local addresses kept in the interned table; more distinct ones go beside the slots.
const MAX_LOCALS: usize = 4096;

/// `Slot::local` of a local address kept in [`Extra`].
const LOCAL_EXTRA: u16 = u16::MAX;

/// `Slot::peer` tags (bits 48..): none, an IPv4 address and port, or kept in [`Extra`].
const PEER_V4: u64 = 1 << 48;
const PEER_EXTRA: u64 = 2 << 48;

type Chunk = [Slot; CHUNK];
type Level2 = [OnceLock<Box<Chunk>>; L2];

/// One client as `CLIENT LIST` shows it. Written at registration under the registry's
/// mutex (so `CLIENT LIST`, which reads under it, sees it whole); afterwards only the
/// owning session writes `active_ms`, `cmd` and `db`, with relaxed stores.
#[derive(Debug)]
pub(super) struct Slot {
    /// The client's id; 0 while the slot is free.
    id: AtomicU64,
    /// The peer: `PEER_V4 | ip << 16 | port`, `PEER_EXTRA` (see [`Extra`]) or 0 (none).
    peer: AtomicU64,
    /// Milliseconds since the server started, at connect.
    created_ms: AtomicU64,
    /// Milliseconds since the server started, at the last command (coarse clock).
    active_ms: AtomicU64,
    /// The descriptor, -1 when unknown.
    fd: AtomicI32,
    /// The local address: 1 + its index in [`Inner::locals`], [`LOCAL_EXTRA`], or 0.
    local: AtomicU16,
    /// The last command: 1 + its index in [`SPECS`], or 0 (none yet, or unknown).
    cmd: AtomicU8,
    /// The selected database (`SELECT`), for `db=`.
    db: AtomicU8,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            id: AtomicU64::new(0),
            peer: AtomicU64::new(0),
            created_ms: AtomicU64::new(0),
            active_ms: AtomicU64::new(0),
            fd: AtomicI32::new(-1),
            local: AtomicU16::new(0),
            cmd: AtomicU8::new(0),
            db: AtomicU8::new(0),
        }
    }
}

/// What a client has beside its slot, only while it has any of it.
#[derive(Debug, Default)]
struct Extra {
    /// `CLIENT SETNAME`.
    name: Option<Box<[u8]>>,
    /// A peer that does not pack into [`Slot::peer`] (IPv6).
    peer: Option<SocketAddr>,
    /// A local address that did not fit the interned table.
    local: Option<SocketAddr>,
}

impl Extra {
    fn is_empty(&self) -> bool {
        self.name.is_none() && self.peer.is_none() && self.local.is_none()
    }
}

/// What the registry's mutex guards.
#[derive(Debug, Default)]
struct Inner {
    /// Slots freed by closed sessions, reused first.
    free: Vec<u32>,
    /// Slots below this have been handed out at least once.
    next: u32,
    /// Names and addresses that do not fit a slot, by slot.
    extra: HashMap<u32, Extra>,
    /// The server's local addresses seen so far (few: one per listener and interface).
    locals: Vec<SocketAddr>,
}

/// The live clients of one server.
#[derive(Debug)]
pub(super) struct Registry {
    inner: Mutex<Inner>,
    /// Chunks of slots, found without a lock; allocated on demand, never moved or freed
    /// while the server lives.
    table: Box<[OnceLock<Box<Level2>>]>,
    /// Milliseconds since the server started, as of the last [`tick`].
    coarse_ms: AtomicU64,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            inner: Mutex::default(),
            table: (0..L1).map(|_| OnceLock::new()).collect(),
            coarse_ms: AtomicU64::new(0),
        }
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Slot `i`, if its chunk exists.
    #[inline]
    fn slot(&self, i: u32) -> Option<&Slot> {
        let i = i as usize;
        let l2 = self.table.get(i / (L2 * CHUNK))?.get()?;
        let chunk = l2.get(i / CHUNK % L2)?.get()?;
        chunk.get(i % CHUNK)
    }

    /// Slot `i`, allocating its chunk when needed (under the mutex).
    fn slot_or_alloc(&self, i: u32) -> Option<&Slot> {
        let i = i as usize;
        let l2 = self
            .table
            .get(i / (L2 * CHUNK))?
            .get_or_init(|| Box::new([const { OnceLock::new() }; L2]));
        let chunk =
            l2.get(i / CHUNK % L2)?.get_or_init(|| Box::new([const { Slot::new() }; CHUNK]));
        chunk.get(i % CHUNK)
    }
}

fn now_ms(sh: &Shared) -> u64 {
    sh.started.elapsed().as_millis() as u64
}

/// Packs an IPv4 peer into a [`Slot::peer`] word.
fn pack_v4(a: SocketAddrV4) -> u64 {
    PEER_V4 | u64::from(a.ip().to_bits()) << 16 | u64::from(a.port())
}

/// Registers client `id` connected as `conn` describes; returns its slot ([`NO_SLOT`]
/// when the registry is full).
pub(super) fn register(sh: &Shared, id: u64, conn: &ConnInfo) -> u32 {
    let reg = &sh.clients_registry;
    let now = now_ms(sh);
    let mut inner = reg.lock();
    let i = match inner.free.pop() {
        Some(i) => i,
        None if (inner.next as usize) < L1 * L2 * CHUNK => {
            inner.next += 1;
            inner.next - 1
        }
        None => return NO_SLOT,
    };
    let Some(slot) = reg.slot_or_alloc(i) else { return NO_SLOT };
    let mut extra = Extra::default();
    let peer = match conn.peer {
        None => 0,
        Some(SocketAddr::V4(a)) => pack_v4(a),
        Some(a) => {
            extra.peer = Some(a);
            PEER_EXTRA
        }
    };
    let local = match conn.local {
        None => 0,
        Some(a) => match inner.locals.iter().position(|&l| l == a) {
            Some(k) => k as u16 + 1,
            None if inner.locals.len() < MAX_LOCALS => {
                inner.locals.push(a);
                inner.locals.len() as u16
            }
            None => {
                extra.local = Some(a);
                LOCAL_EXTRA
            }
        },
    };
    if !extra.is_empty() {
        inner.extra.insert(i, extra);
    }
    slot.peer.store(peer, Ordering::Relaxed);
    slot.local.store(local, Ordering::Relaxed);
    slot.fd.store(conn.fd.and_then(|fd| i32::try_from(fd).ok()).unwrap_or(-1), Ordering::Relaxed);
    slot.created_ms.store(now, Ordering::Relaxed);
    slot.active_ms.store(now, Ordering::Relaxed);
    slot.cmd.store(0, Ordering::Relaxed);
    slot.db.store(0, Ordering::Relaxed);
    slot.id.store(id, Ordering::Relaxed);
    i
}

/// Removes the client in slot `i` (from [`Protocol::closed`](crate::proto::Protocol::closed)).
pub(super) fn unregister(sh: &Shared, i: u32) {
    let reg = &sh.clients_registry;
    let Some(slot) = reg.slot(i) else { return };
    let mut inner = reg.lock();
    if slot.id.swap(0, Ordering::Relaxed) != 0 {
        inner.extra.remove(&i);
        inner.free.push(i);
    }
}

/// Client `i`'s id (0 without a slot).
pub(super) fn id(sh: &Shared, i: u32) -> u64 {
    sh.clients_registry.slot(i).map_or(0, |s| s.id.load(Ordering::Relaxed))
}

/// Advances the registry's coarse clock (from [`Protocol::tick`], about once a second).
///
/// [`Protocol::tick`]: crate::proto::Protocol::tick
pub(super) fn tick(sh: &Shared) {
    sh.clients_registry.coarse_ms.store(now_ms(sh), Ordering::Relaxed);
}

/// Notes that `client` ran its last command (`client.cmd`) now, for `cmd=` and `idle=`:
/// two relaxed stores into its slot, once per call.
#[inline]
pub(super) fn touch(sh: &Shared, client: &Client) {
    if let Some(slot) = sh.clients_registry.slot(client.slot) {
        slot.cmd.store(client.cmd, Ordering::Relaxed);
        let now = sh.clients_registry.coarse_ms.load(Ordering::Relaxed);
        slot.active_ms.store(now, Ordering::Relaxed);
    }
}

/// Notes `client`'s newly selected database (from `SELECT`) for `db=`.
pub(super) fn selected(sh: &Shared, client: &Client) {
    if let Some(slot) = sh.clients_registry.slot(client.slot) {
        slot.db.store(client.db as u8, Ordering::Relaxed);
    }
}

/// The `cmd=` value of a slot's last command: its name as Redis writes it, `NULL` before
/// the first command or for an unknown one.
fn last_cmd(cmd: u8) -> &'static str {
    (cmd as usize)
        .checked_sub(1)
        .and_then(|c| SPECS.get(c))
        .and_then(|s| std::str::from_utf8(s.1).ok())
        .unwrap_or("NULL")
}

/// What `CLIENT LIST` shows of one client, copied out under the registry's mutex.
struct Row {
    id: u64,
    addr: Option<SocketAddr>,
    laddr: Option<SocketAddr>,
    fd: i32,
    created_ms: u64,
    active_ms: u64,
    cmd: u8,
    db: u8,
    name: Option<Box<[u8]>>,
}

/// Reads slot `i` (under the registry's mutex, `inner`); `None` when free.
fn row(reg: &Registry, inner: &Inner, i: u32) -> Option<Row> {
    let slot = reg.slot(i)?;
    let id = slot.id.load(Ordering::Relaxed);
    if id == 0 {
        return None;
    }
    let extra = inner.extra.get(&i);
    let peer = slot.peer.load(Ordering::Relaxed);
    let addr = match peer & !((1 << 48) - 1) {
        PEER_V4 => Some(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from_bits((peer >> 16) as u32),
            peer as u16,
        ))),
        PEER_EXTRA => extra.and_then(|e| e.peer),
        _ => None,
    };
    let laddr = match slot.local.load(Ordering::Relaxed) {
        0 => None,
        LOCAL_EXTRA => extra.and_then(|e| e.local),
        k => inner.locals.get(k as usize - 1).copied(),
    };
    Some(Row {
        id,
        addr,
        laddr,
        fd: slot.fd.load(Ordering::Relaxed),
        created_ms: slot.created_ms.load(Ordering::Relaxed),
        active_ms: slot.active_ms.load(Ordering::Relaxed),
        cmd: slot.cmd.load(Ordering::Relaxed),
        db: slot.db.load(Ordering::Relaxed),
        name: extra.and_then(|e| e.name.clone()),
    })
}

fn wrong_arity(out: &mut Vec<u8>, name: &[u8]) {
    out.extend_from_slice(b"-ERR wrong number of arguments for '");
    out.extend_from_slice(name);
    out.extend_from_slice(b"' command\r\n");
}

/// At most `n` bytes of `s`.
fn prefix(s: &[u8], n: usize) -> &[u8] {
    &s[..s.len().min(n)]
}

/// Client names and `SETINFO` values: printable ASCII without spaces.
fn valid_name(s: &[u8]) -> bool {
    s.iter().all(|b| (b'!'..=b'~').contains(b))
}

/// `-ERR unknown subcommand 'sub'. Try CLIENT HELP.` (Redis 7).
fn unknown_subcommand(a: &Args<'_>, out: &mut Vec<u8>) {
    let mut msg = b"ERR unknown subcommand '".to_vec();
    msg.extend_from_slice(prefix(a.get(1), 128));
    msg.extend_from_slice(b"'. Try CLIENT HELP.");
    reply::error_sanitized(out, &msg);
}

/// `ip:port` as Redis writes it (IPv6 without brackets); `?:0` when unknown.
fn write_addr(line: &mut String, a: Option<SocketAddr>) {
    let _ = match a {
        Some(a) => write!(line, "{}:{}", a.ip(), a.port()),
        None => write!(line, "?:0"),
    };
}

/// One `CLIENT LIST` line (with its `\n`); `current` is the command being run when
/// `r` is the caller (Redis shows the caller's own `client|info` / `client|list`).
fn info_line(sh: &Shared, r: &Row, current: Option<&str>, line: &mut String) {
    let now = now_ms(sh);
    let name = r.name.as_deref().unwrap_or_default();
    let _ = write!(line, "id={} addr=", r.id);
    write_addr(line, r.addr);
    line.push_str(" laddr=");
    write_addr(line, r.laddr);
    let age = now.saturating_sub(r.created_ms) / 1000;
    let idle = match current {
        Some(_) => 0,
        // The stamp is the coarse clock's (up to a tick behind).
        None => now.saturating_sub(r.active_ms + 999) / 1000,
    };
    let _ = write!(
        line,
        " fd={} name={} age={age} idle={idle} flags=N db={} sub=0 psub=0 ssub=0 multi=-1 \
         watch=0 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 \
         tot-mem=0 events=r cmd=",
        r.fd,
        String::from_utf8_lossy(name),
        r.db,
    );
    line.push_str(current.unwrap_or_else(|| last_cmd(r.cmd)));
    line.push_str(" user=default redir=-1 resp=2 lib-name= lib-ver=\n");
}

/// The line of a session without a slot (the registry was full).
fn unregistered_line(client: &Client, current: &str) -> String {
    format!(
        "id=0 addr=?:0 laddr=?:0 fd=-1 name= age=0 idle=0 flags=N db={} sub=0 psub=0 \
         ssub=0 multi=-1 watch=0 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 \
         oll=0 omem=0 tot-mem=0 events=r cmd={current} user=default redir=-1 resp=2 \
         lib-name= lib-ver=\n",
        client.db
    )
}

/// Client `client`'s row, if it has a slot.
fn my_row(sh: &Shared, client: &Client) -> Option<Row> {
    let reg = &sh.clients_registry;
    let inner = reg.lock();
    row(reg, &inner, client.slot)
}

/// `CLIENT SETNAME|GETNAME|ID|SETINFO|INFO|LIST`.
pub(super) fn command(sh: &Shared, client: &mut Client, a: &Args<'_>, out: &mut Vec<u8>) {
    let sub = a.get(1);
    let sub_arity = |n: usize, name: &[u8], out: &mut Vec<u8>| {
        if a.len() != n {
            wrong_arity(out, name);
            false
        } else {
            true
        }
    };
    if sub.eq_ignore_ascii_case(b"setname") {
        if !sub_arity(3, b"client|setname", out) {
            return;
        }
        let name = a.get(2);
        if !valid_name(name) {
            reply::error(
                out,
                b"ERR Client names cannot contain spaces, newlines or special characters.",
            );
            return;
        }
        let reg = &sh.clients_registry;
        let mut inner = reg.lock();
        if reg.slot(client.slot).is_some() {
            let extra = inner.extra.entry(client.slot).or_default();
            extra.name = (!name.is_empty()).then(|| name.into());
            if extra.is_empty() {
                inner.extra.remove(&client.slot);
            }
        }
        reply::raw(out, OK);
    } else if sub.eq_ignore_ascii_case(b"getname") {
        if sub_arity(2, b"client|getname", out) {
            let inner = sh.clients_registry.lock();
            let name = inner.extra.get(&client.slot).and_then(|e| e.name.as_deref());
            reply::opt_bulk(out, name);
        }
    } else if sub.eq_ignore_ascii_case(b"id") {
        if sub_arity(2, b"client|id", out) {
            reply::int(out, id(sh, client.slot) as i64);
        }
    } else if sub.eq_ignore_ascii_case(b"setinfo") {
        if !sub_arity(4, b"client|setinfo", out) {
            return;
        }
        let attr = a.get(2);
        if !(attr.eq_ignore_ascii_case(b"lib-name") || attr.eq_ignore_ascii_case(b"lib-ver")) {
            let mut msg = b"ERR Unrecognized option '".to_vec();
            msg.extend_from_slice(prefix(attr, 128));
            msg.push(b'\'');
            reply::error_sanitized(out, &msg);
        } else if !valid_name(a.get(3)) {
            let mut msg = attr.to_ascii_lowercase();
            msg.splice(0..0, b"ERR ".iter().copied());
            msg.extend_from_slice(b" cannot contain spaces, newlines or special characters.");
            reply::error(out, &msg);
        } else {
            reply::raw(out, OK);
        }
    } else if sub.eq_ignore_ascii_case(b"info") {
        if sub_arity(2, b"client|info", out) {
            let line = match my_row(sh, client) {
                Some(r) => {
                    let mut line = String::new();
                    info_line(sh, &r, Some("client|info"), &mut line);
                    line
                }
                None => unregistered_line(client, "client|info"),
            };
            reply::bulk(out, line.as_bytes());
        }
    } else if sub.eq_ignore_ascii_case(b"list") {
        list(sh, client, a, out);
    } else {
        unknown_subcommand(a, out);
    }
}

/// `CLIENT LIST [TYPE normal] [ID id ...]`: every live client, by id.
fn list(sh: &Shared, client: &Client, a: &Args<'_>, out: &mut Vec<u8>) {
    let mut ids: Option<Vec<u64>> = None;
    let mut i = 2;
    while i < a.len() {
        let opt = a.get(i);
        if opt.eq_ignore_ascii_case(b"type") && i + 1 < a.len() {
            let t = a.get(i + 1);
            if !t.eq_ignore_ascii_case(b"normal") {
                // No replicas, masters or pubsub clients here.
                let known = [&b"master"[..], b"replica", b"slave", b"pubsub"];
                if known.iter().any(|k| t.eq_ignore_ascii_case(k)) {
                    return reply::bulk(out, b"");
                }
                let mut msg = b"ERR Unknown client type '".to_vec();
                msg.extend_from_slice(prefix(t, 64));
                msg.push(b'\'');
                return reply::error_sanitized(out, &msg);
            }
            i += 2;
        } else if opt.eq_ignore_ascii_case(b"id") && i + 1 < a.len() {
            let mut v = Vec::new();
            for j in i + 1..a.len() {
                match std::str::from_utf8(a.get(j)).ok().and_then(|s| s.parse::<u64>().ok()) {
                    Some(id) if id > 0 => v.push(id),
                    _ => return reply::error(out, b"ERR Invalid client ID"),
                }
            }
            ids = Some(v);
            i = a.len();
        } else {
            return reply::raw(out, reply::SYNTAX_ERR);
        }
    }
    let wanted = |id: u64| ids.as_ref().is_none_or(|v| v.contains(&id));
    let reg = &sh.clients_registry;
    let mut rows: Vec<Row> = {
        let inner = reg.lock();
        (0..inner.next).filter_map(|i| row(reg, &inner, i)).filter(|r| wanted(r.id)).collect()
    };
    rows.sort_by_key(|r| r.id);
    let me = id(sh, client.slot);
    let mut text = String::new();
    for r in &rows {
        let current = (r.id == me).then_some("client|list");
        info_line(sh, r, current, &mut text);
    }
    if client.slot == NO_SLOT && wanted(0) {
        text.push_str(&unregistered_line(client, "client|list"));
    }
    reply::bulk(out, text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::super::Redis;
    use crate::proto::{Bound, ConnInfo, Protocol};

    fn run(s: &mut Bound<Redis>, input: &str) -> String {
        let mut out = Vec::new();
        s.on_input(input.as_bytes(), &mut out).expect("no protocol error");
        String::from_utf8_lossy(&out).into_owned()
    }

    fn info(peer: &str, fd: i64) -> ConnInfo {
        ConnInfo {
            peer: Some(peer.parse().expect("addr")),
            local: Some("127.0.0.1:6380".parse().expect("addr")),
            fd: Some(fd),
        }
    }

    #[test]
    fn client_list_shows_every_registered_session_with_its_addresses() {
        let r = Redis::default();
        let mut a = r.open_for(&info("203.0.113.5:5000", 7));
        let mut b = r.open_for(&info("[2001:db8::1]:6000", 8));
        assert_eq!(run(&mut b, "CLIENT SETNAME bee\r\nGET k\r\n"), "+OK\r\n$-1\r\n");
        let list = run(&mut a, "CLIENT LIST\r\n");
        let lines: Vec<&str> = list.lines().skip(1).filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 2, "{list}");
        assert!(
            lines[0].starts_with("id=1 addr=203.0.113.5:5000 laddr=127.0.0.1:6380 fd=7 name= ")
        );
        assert!(lines[0].contains(" cmd=client|list "), "{}", lines[0]);
        // IPv6 as Redis writes it: no brackets.
        assert!(lines[1].starts_with("id=2 addr=2001:db8::1:6000 "), "{}", lines[1]);
        assert!(lines[1].contains(" name=bee ") && lines[1].contains(" cmd=get "));
        for field in [" age=", " idle=", " flags=N ", " db=0 ", " user=default "] {
            assert!(lines[1].contains(field), "{field} in {}", lines[1]);
        }
        let me = run(&mut b, "CLIENT INFO\r\n");
        assert!(me.contains("id=2 ") && me.contains(" cmd=client|info "), "{me}");
        // Filters.
        let only = run(&mut a, "CLIENT LIST ID 2\r\n");
        assert!(only.contains("id=2 ") && !only.contains("id=1 "), "{only}");
        assert_eq!(run(&mut a, "CLIENT LIST TYPE pubsub\r\n"), "$0\r\n\r\n");
        assert!(run(&mut a, "CLIENT LIST TYPE nope\r\n").starts_with("-ERR Unknown client type"));
        assert!(run(&mut a, "CLIENT LIST ID x\r\n").starts_with("-ERR Invalid client ID"));
        assert!(run(&mut a, "CLIENT LIST FOO\r\n").starts_with("-ERR syntax error"));
        // SELECT shows in db=.
        assert_eq!(run(&mut b, "SELECT 3\r\n"), "+OK\r\n");
        let me = run(&mut b, "CLIENT INFO\r\n");
        assert!(me.contains(" db=3 "), "{me}");
        // A dropped session leaves the list.
        drop(b);
        let list = run(&mut a, "CLIENT LIST\r\n");
        assert!(!list.contains("id=2 "), "{list}");
    }

    /// A registered client costs one slot of this size in the registry (plus a chunk's
    /// share of slack); names and IPv6 peers are kept beside it only when present.
    #[test]
    fn a_slot_is_small() {
        assert!(std::mem::size_of::<super::Slot>() <= 40);
    }

    #[test]
    fn closed_sessions_free_their_slot_for_the_next() {
        let r = Redis::default();
        let mut a = r.open_for(&info("203.0.113.5:5000", 7));
        assert_eq!(run(&mut a, "CLIENT SETNAME first\r\n"), "+OK\r\n");
        drop(a);
        let mut b = r.open_for(&info("203.0.113.6:5001", 9));
        // The same slot, reused: the old name and address are gone, the id is new.
        let me = run(&mut b, "CLIENT INFO\r\n");
        assert!(me.contains("id=2 addr=203.0.113.6:5001 ") && me.contains(" name= "), "{me}");
        assert_eq!(run(&mut b, "CLIENT GETNAME\r\n"), "$-1\r\n");
        let list = run(&mut b, "CLIENT LIST\r\n");
        assert_eq!(list.lines().filter(|l| l.contains("id=")).count(), 1, "{list}");
    }

    #[test]
    fn unregistered_sessions_still_answer_client_info() {
        let r = Redis::default();
        let mut s = r.open();
        let line = run(&mut s, "CLIENT INFO\r\n");
        assert!(line.contains("addr=?:0 ") && line.contains(" fd=-1 "), "{line}");
        let list = run(&mut s, "CLIENT LIST\r\n");
        assert!(list.contains("id=1 "), "{list}");
    }
}
