//! `CLIENT` (`ID`, `SETNAME`, `GETNAME`, `SETINFO`, `INFO`, `LIST`) and the registry of
//! live clients that `CLIENT LIST` reads.
//!
//! A session made with [`Protocol::new_session_for`](crate::proto::Protocol) (what
//! every engine calls) is registered in the server's [`Registry`] with the addresses the
//! engine gave (the client's address from a PROXY header when there was one), its
//! descriptor and its start time; the registration ends when the session is dropped.
//! What changes per command is kept cheap: [`touch`] copies the command's name (at most
//! 16 bytes, unparsed) and a coarse clock (the registry's, advanced by the protocol's
//! once-a-second [`tick`]) into three relaxed atomics of the session's own entry: no
//! lock, no clock read, no lookup. `CLIENT LIST`/`INFO` turn them into `cmd=` and `idle=`
//! when asked. The registry's mutex is taken only at connect, disconnect, `SETNAME` and
//! `CLIENT LIST`.
//!
//! Lines follow Redis 7's field order; fields this server has no notion of (buffers,
//! subscriptions, transactions) are reported as an idle Redis reports them.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use slab::Slab;

use super::Shared;
use super::commands::{Args, Client, SPECS, lookup};
use super::reply::{self, OK};
use crate::proto::ConnInfo;

/// The live clients of one server.
#[derive(Debug, Default)]
pub(super) struct Registry {
    clients: Mutex<Slab<Arc<Entry>>>,
    /// Milliseconds since the server started, as of the last [`tick`].
    coarse_ms: AtomicU64,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Slab<Arc<Entry>>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One client as `CLIENT LIST` shows it.
#[derive(Debug)]
pub(super) struct Entry {
    id: u64,
    addr: Option<SocketAddr>,
    laddr: Option<SocketAddr>,
    fd: Option<i64>,
    /// Milliseconds since the server started, at connect.
    created_ms: u64,
    /// Milliseconds since the server started, at the last command (coarse clock).
    active_ms: AtomicU64,
    /// The last command's name as sent, up to 16 bytes, zero-padded (all zero before
    /// the first command; all ones for a longer name).
    last_cmd: [AtomicU64; 2],
    name: Mutex<Option<Vec<u8>>>,
    /// The selected database (`SELECT`), for `db=`.
    db: AtomicUsize,
}

/// A session's registration; dropping it (with the session) removes the client.
#[derive(Debug)]
pub(super) struct Registered {
    shared: Arc<Shared>,
    key: usize,
    entry: Arc<Entry>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut clients = self.shared.clients_registry.lock();
        if clients.get(self.key).is_some_and(|e| Arc::ptr_eq(e, &self.entry)) {
            clients.remove(self.key);
        }
    }
}

fn now_ms(sh: &Shared) -> u64 {
    sh.started.elapsed().as_millis() as u64
}

/// Registers client `id` connected as `conn` describes.
pub(super) fn register(shared: &Arc<Shared>, id: u64, conn: &ConnInfo) -> Registered {
    let now = now_ms(shared);
    let entry = Arc::new(Entry {
        id,
        addr: conn.peer,
        laddr: conn.local,
        fd: conn.fd,
        created_ms: now,
        active_ms: AtomicU64::new(now),
        last_cmd: [AtomicU64::new(0), AtomicU64::new(0)],
        name: Mutex::new(None),
        db: AtomicUsize::new(0),
    });
    let key = shared.clients_registry.lock().insert(Arc::clone(&entry));
    Registered { shared: Arc::clone(shared), key, entry }
}

/// Advances the registry's coarse clock (from [`Protocol::tick`], about once a second).
///
/// [`Protocol::tick`]: crate::proto::Protocol::tick
pub(super) fn tick(sh: &Shared) {
    sh.clients_registry.coarse_ms.store(now_ms(sh), Ordering::Relaxed);
}

/// Notes that `client` runs command `a` now (for `cmd=` and `idle=`): three relaxed
/// stores; nothing for an unregistered session.
#[inline]
pub(super) fn touch(sh: &Shared, client: &Client, a: &Args<'_>) {
    if let Some(r) = &client.registered {
        let name = a.get(0);
        let mut raw = [0u8; 16];
        if name.len() <= 16 {
            raw[..name.len()].copy_from_slice(name);
        } else {
            raw = [0xff; 16];
        }
        let (lo, hi) = raw.split_at(8);
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0xff; 8]));
        r.entry.last_cmd[0].store(word(lo), Ordering::Relaxed);
        r.entry.last_cmd[1].store(word(hi), Ordering::Relaxed);
        let now = sh.clients_registry.coarse_ms.load(Ordering::Relaxed);
        r.entry.active_ms.store(now, Ordering::Relaxed);
    }
}

/// Notes `client`'s newly selected database (from `SELECT`) for `db=`.
pub(super) fn selected(client: &Client) {
    if let Some(r) = &client.registered {
        r.entry.db.store(client.db, Ordering::Relaxed);
    }
}

/// The `cmd=` value of `e`'s last command: its name as Redis writes it, `NULL` before
/// the first command or for an unknown one.
fn last_cmd(e: &Entry) -> &'static str {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&e.last_cmd[0].load(Ordering::Relaxed).to_le_bytes());
    raw[8..].copy_from_slice(&e.last_cmd[1].load(Ordering::Relaxed).to_le_bytes());
    let len = raw.iter().position(|&b| b == 0).unwrap_or(16);
    lookup(&raw[..len])
        .and_then(|c| SPECS.get(c as usize))
        .and_then(|s| std::str::from_utf8(s.1).ok())
        .unwrap_or("NULL")
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
/// `e` is the caller (Redis shows the caller's own `client|info` / `client|list`).
fn info_line(sh: &Shared, e: &Entry, current: Option<&str>, line: &mut String) {
    let now = now_ms(sh);
    let name = e.name.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default();
    let _ = write!(line, "id={} addr=", e.id);
    write_addr(line, e.addr);
    line.push_str(" laddr=");
    write_addr(line, e.laddr);
    let age = now.saturating_sub(e.created_ms) / 1000;
    let idle = match current {
        Some(_) => 0,
        // The stamp is the coarse clock's (up to a tick behind).
        None => now.saturating_sub(e.active_ms.load(Ordering::Relaxed) + 999) / 1000,
    };
    let _ = write!(
        line,
        " fd={} name={} age={age} idle={idle} flags=N db={} sub=0 psub=0 ssub=0 multi=-1 \
         watch=0 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 \
         tot-mem=0 events=r cmd=",
        e.fd.unwrap_or(-1),
        String::from_utf8_lossy(&name),
        e.db.load(Ordering::Relaxed),
    );
    line.push_str(current.unwrap_or_else(|| last_cmd(e)));
    line.push_str(" user=default redir=-1 resp=2 lib-name= lib-ver=\n");
}

/// The line of an unregistered session (made with `new_session`: no addresses).
fn unregistered_line(client: &Client, current: &str) -> String {
    let name = String::from_utf8_lossy(client.name.as_deref().unwrap_or_default()).into_owned();
    format!(
        "id={} addr=?:0 laddr=?:0 fd=-1 name={name} age=0 idle=0 flags=N db={} sub=0 psub=0 \
         ssub=0 multi=-1 watch=0 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 \
         oll=0 omem=0 tot-mem=0 events=r cmd={current} user=default redir=-1 resp=2 \
         lib-name= lib-ver=\n",
        client.id, client.db
    )
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
        client.name = (!name.is_empty()).then(|| name.to_vec());
        if let Some(r) = &client.registered {
            *r.entry.name.lock().unwrap_or_else(|p| p.into_inner()) = client.name.clone();
        }
        reply::raw(out, OK);
    } else if sub.eq_ignore_ascii_case(b"getname") {
        if sub_arity(2, b"client|getname", out) {
            reply::opt_bulk(out, client.name.as_deref());
        }
    } else if sub.eq_ignore_ascii_case(b"id") {
        if sub_arity(2, b"client|id", out) {
            reply::int(out, client.id as i64);
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
            let line = match &client.registered {
                Some(r) => {
                    let mut line = String::new();
                    info_line(sh, &r.entry, Some("client|info"), &mut line);
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
    let mut entries: Vec<Arc<Entry>> =
        sh.clients_registry.lock().iter().map(|(_, e)| Arc::clone(e)).collect();
    entries.sort_by_key(|e| e.id);
    let me = client.registered.as_ref().map(|r| r.entry.id);
    let mut text = String::new();
    for e in entries.iter().filter(|e| wanted(e.id)) {
        let current = (Some(e.id) == me).then_some("client|list");
        info_line(sh, e, current, &mut text);
    }
    if me.is_none() && wanted(client.id) {
        text.push_str(&unregistered_line(client, "client|list"));
    }
    reply::bulk(out, text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::super::Redis;
    use crate::proto::{ConnInfo, Protocol, Session};

    fn run(s: &mut super::super::RedisSession, input: &str) -> String {
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
        let mut a = r.new_session_for(&info("203.0.113.5:5000", 7));
        let mut b = r.new_session_for(&info("[2001:db8::1]:6000", 8));
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

    #[test]
    fn unregistered_sessions_still_answer_client_info() {
        let r = Redis::default();
        let mut s = r.new_session();
        let line = run(&mut s, "CLIENT INFO\r\n");
        assert!(line.contains("addr=?:0 ") && line.contains(" fd=-1 "), "{line}");
        let list = run(&mut s, "CLIENT LIST\r\n");
        assert!(list.contains("id=1 "), "{list}");
    }
}
