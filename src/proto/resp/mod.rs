//! Redis RESP2: a string-only, in-memory Redis (`--proto redis`).
//!
//! [`Redis`] is the protocol value (configuration plus one shared [`Keyspace`]; clones,
//! one per event loop, share it) and [`RedisSession`] the per-connection state machine.
//! A session parses every complete command at the front of its input (multibulk
//! `*N\r\n$len\r\n...` or inline `SET k v\r\n`, pipelined in any mix), executes them in
//! order and appends their replies, byte-compatible with Redis 7 speaking RESP2.
//!
//! Layout:
//! - `parse.rs`: the request parser, zero-copy for multibulk arguments, resumable for
//!   large requests that arrive in pieces;
//! - `keyspace.rs`: [`Keyspace`], 64 sharded maps with lazy expiry and an expiry index
//!   for exact, time-bounded active expiry;
//! - `commands.rs`: command lookup, arity, dispatch and the core commands;
//! - `client.rs`: `CLIENT` and the registry of live clients `CLIENT LIST` shows;
//! - `strings.rs`: the rest of the string family (ranges, bits, `LCS`, `INCRBYFLOAT`);
//! - `float.rs`: 80-bit `long double` emulation, so `INCRBYFLOAT` rounds and prints as
//!   Redis does on x86-64;
//! - `keys.rs`: keyspace commands (`KEYS`, `SCAN`, `RENAME`, `COPY`, `OBJECT`, ...);
//! - `reply.rs`: reply encoding.
//!
//! Supported commands (replies and error texts as Redis 7.0's, checked byte for byte
//! against redis-server 7.0.15 by `tests/redis_compat.rs`):
//! - strings: `GET SET` (`NX XX GET EX PX EXAT PXAT KEEPTTL`) `GETSET GETDEL GETEX SETNX
//!   SETEX PSETEX MGET MSET MSETNX APPEND STRLEN GETRANGE SUBSTR SETRANGE LCS SETBIT
//!   GETBIT BITCOUNT BITPOS`;
//! - counters: `INCR DECR INCRBY DECRBY INCRBYFLOAT`;
//! - expiry: `EXPIRE PEXPIRE EXPIREAT PEXPIREAT` (`NX XX GT LT`) `TTL PTTL EXPIRETIME
//!   PEXPIRETIME PERSIST`;
//! - keyspace: `DEL UNLINK EXISTS TOUCH TYPE KEYS SCAN RANDOMKEY RENAME RENAMENX COPY
//!   OBJECT DBSIZE FLUSHDB FLUSHALL TIME`;
//! - databases: `SELECT MOVE SWAPDB` (and `COPY ... DB n`);
//! - connection and server: `PING ECHO QUIT COMMAND CONFIG INFO CLIENT`, and what test
//!   harnesses send: `FUNCTION FLUSH`, `SCRIPT FLUSH` (nothing to flush), `CONFIG SET` of
//!   a reported parameter to its current value (changing one fails with Redis's `CONFIG
//!   SET failed` wording), `CONFIG RESETSTAT`, `DEBUG` (refused as by a Redis with
//!   `enable-debug-command no`).
//!
//! `HELLO` is answered as by a RESP2-only server (unknown command), so clients fall back
//! to RESP2. Commands of other data types (lists, hashes, sets, sorted sets, streams)
//! are unknown commands.
//!
//! Protocol errors (malformed requests, limits exceeded) are answered with Redis's
//! `-ERR Protocol error: ...` reply in [`ProtoError::reply`] and close the connection;
//! command errors are ordinary replies.
//!
//! Databases: 16 (`SELECT 0..15`, `MOVE`, `SWAPDB`, `COPY ... DB n`), each its own
//! [`Keyspace`]; `SWAPDB` swaps two entries of a logical→physical table, so clients see
//! the other database's data at once, as in Redis.
//!
//! Differences from Redis worth knowing: string values only; multi-key commands (`MSET`, `DEL a b`, `RENAME`, `COPY`) lock one key's shard at
//! a time, so they are not atomic with respect to other connections; a whole request is
//! limited by [`RespConfig::max_request`] (Redis's `client-query-buffer-limit` closes
//! silently, this replies `-ERR Protocol error: too big request`); a bulk payload not
//! followed by CRLF is a protocol error (Redis does not check). [`RespConfig::max_bulk`]
//! plays the part of `proto-max-bulk-len` for values too (`APPEND`, `SETRANGE`, `SETBIT`
//! and `LCS`'s table are limited by it; Redis's default is 512 MB, evloop's 16 MiB).
//! Expired keys are never counted or listed (`DBSIZE`, `KEYS`, `SCAN`, `RANDOMKEY`), so a
//! key vanishes exactly at its deadline where Redis takes up to ~100 ms; their memory is
//! reclaimed by the time-bounded sweep on each loop's tick.
//! `EXPIREAT` and `EXPIRETIME` use the wall clock read when the keyspace was created plus
//! the monotonic clock since, so a wall-clock step later does not move deadlines.

mod client;
mod commands;
mod float;
mod keys;
mod keyspace;
mod parse;
mod reply;
#[cfg(test)]
mod sorted_runs;
mod strings;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{ConnInfo, Pending, Progress, ProtoError, Protocol};
use commands::{Args, Client};
use parse::{Parsed, Partial, with_scratch};

pub use keyspace::{Keyspace, SweepStats};

/// Limits of the Redis protocol. Exceeding one is a protocol error that closes the
/// connection, never an unbounded allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RespConfig {
    /// Largest bulk string accepted in a request (`$len`), and the largest value `APPEND`
    /// may grow (Redis's `proto-max-bulk-len`). Default 16 MiB.
    pub max_bulk: usize,
    /// Most elements in one multibulk request (`*N`). Default 1M (1,048,576).
    pub max_multibulk: usize,
    /// Longest inline request line, and longest `*N`/`$len` length line, without its
    /// line ending (Redis's `PROTO_INLINE_MAX_SIZE`). Default 64 KiB.
    pub max_inline: usize,
    /// Most bytes of one multibulk request, headers and payloads together (Redis's
    /// `client-query-buffer-limit`); bounds what a connection leaves unconsumed.
    /// Default 256 MiB.
    pub max_request: usize,
    /// Output budget of one call: once the replies a call appended reach this many
    /// bytes, the session stops executing further pipelined commands and leaves them
    /// unconsumed; the engine calls again once the output has drained (so pending output
    /// stays near the engine's high watermark however many commands are pipelined).
    /// Default 1 MiB. One command's reply is never split: a single large reply may pass
    /// it (see `max_reply`).
    pub output_budget: usize,
    /// Largest reply one command may produce (the engine's output limit, `--max-output`):
    /// an `MGET` whose reply would be larger is refused before it is built, with
    /// `-ERR reply exceeds the output limit` and a close (error kind `output_limit`).
    /// Default 64 MiB. Single-value replies are bounded by `max_bulk` already.
    pub max_reply: usize,
}

impl Default for RespConfig {
    fn default() -> Self {
        RespConfig {
            max_bulk: 16 << 20,
            max_multibulk: 1 << 20,
            max_inline: 64 << 10,
            max_request: 256 << 20,
            output_budget: 1 << 20,
            max_reply: 64 << 20,
        }
    }
}

/// Number of databases (`SELECT 0..15`, Redis's default).
pub const DATABASES: usize = 16;

/// Time budget of one tick's active expiry, all databases together.
const SWEEP_BUDGET: std::time::Duration = std::time::Duration::from_millis(1);

/// Server-wide state shared by all sessions and clones.
#[derive(Debug)]
struct Shared {
    cfg: RespConfig,
    /// The databases (`SELECT 0..15`), by physical index.
    dbs: [Keyspace; DATABASES],
    /// Logical database → physical index into `dbs` (`SWAPDB` swaps two entries).
    db_map: [AtomicUsize; DATABASES],
    /// Serializes `SWAPDB`s.
    swap_lock: Mutex<()>,
    /// The database whose sweep runs first on the next tick (round-robin).
    sweep_db: AtomicUsize,
    started: Instant,
    next_client_id: AtomicU64,
    /// Sessions alive now (`connected_clients`).
    clients: AtomicUsize,
    /// Sessions ever created (`total_connections_received`).
    connections: AtomicU64,
    /// Live clients for `CLIENT LIST` (`client.rs`).
    clients_registry: client::Registry,
}

impl Shared {
    /// The keyspace of logical database `i` (taken modulo [`DATABASES`]).
    #[inline]
    fn db(&self, i: usize) -> &Keyspace {
        let phys = self.db_map[i % DATABASES].load(Ordering::Acquire);
        &self.dbs[phys % DATABASES]
    }

    /// `SWAPDB a b`.
    fn swap_dbs(&self, a: usize, b: usize) {
        let _g = self.swap_lock.lock().unwrap_or_else(|p| p.into_inner());
        let pa = self.db_map[a].load(Ordering::Acquire);
        let pb = self.db_map[b].load(Ordering::Acquire);
        self.db_map[a].store(pb, Ordering::Release);
        self.db_map[b].store(pa, Ordering::Release);
    }
}

/// The Redis protocol: configuration and one keyspace shared by every clone (one clone
/// per event loop), so all connections of a server see the same data.
#[derive(Debug, Clone)]
pub struct Redis {
    shared: Arc<Shared>,
}

impl Redis {
    /// A server with the limits `cfg` and an empty keyspace.
    pub fn new(cfg: RespConfig) -> Self {
        Redis {
            shared: Arc::new(Shared {
                cfg,
                dbs: std::array::from_fn(|_| Keyspace::new()),
                db_map: std::array::from_fn(AtomicUsize::new),
                swap_lock: Mutex::new(()),
                sweep_db: AtomicUsize::new(0),
                started: Instant::now(),
                next_client_id: AtomicU64::new(0),
                clients: AtomicUsize::new(0),
                connections: AtomicU64::new(0),
                clients_registry: client::Registry::default(),
            }),
        }
    }

    /// Database 0's keyspace, shared by all clones (for tests and metrics).
    pub fn keyspace(&self) -> &Keyspace {
        self.shared.db(0)
    }

    /// The limits this server was made with.
    pub fn config(&self) -> &RespConfig {
        &self.shared.cfg
    }
}

impl Default for Redis {
    fn default() -> Self {
        Redis::new(RespConfig::default())
    }
}

impl Protocol for Redis {
    type Session = RedisSession;

    fn name(&self) -> &'static str {
        "redis"
    }

    /// A session registered for `CLIENT LIST` without addresses or descriptor.
    fn new_session(&self) -> RedisSession {
        self.new_session_for(&ConnInfo::default())
    }

    /// `CLIENT LIST` shows addresses and descriptors.
    fn wants_conn_info(&self) -> bool {
        true
    }

    /// A session registered for `CLIENT LIST` with `conn`'s addresses and descriptor.
    fn new_session_for(&self, conn: &ConnInfo) -> RedisSession {
        let sh = &*self.shared;
        let id = sh.next_client_id.fetch_add(1, Ordering::Relaxed) + 1;
        sh.clients.fetch_add(1, Ordering::Relaxed);
        sh.connections.fetch_add(1, Ordering::Relaxed);
        RedisSession { slot: client::register(sh, id, conn), db: 0, partial: None }
    }

    /// Executes every complete command at the front of `input` in order, appending each
    /// reply to `out`. Stops at an incomplete command (left unconsumed; at most about
    /// `max_request + max_inline` bytes before a protocol error), once this call's
    /// replies reach `output_budget` (the rest left unconsumed, nothing pending), after
    /// `QUIT` (with `close: true`), or at a protocol error (replies of earlier commands
    /// stay in `out`), including a reply over `max_reply`.
    fn on_input(
        &self,
        session: &mut RedisSession,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Progress, ProtoError> {
        with_scratch(|sc| {
            let mut client = Client {
                slot: session.slot,
                db: usize::from(session.db),
                reply_refused: false,
                cmd: 0,
                executed: sc.executed,
            };
            let r = run(&self.shared, &mut client, sc, &mut session.partial, input, out);
            // Every exit records the commands it answered; one registry touch for them all.
            let n = match &r {
                Ok(p) => p.requests,
                Err(e) => e.requests,
            };
            if n > 0 {
                client::touch(&self.shared, &client);
            }
            sc.executed = client.executed;
            session.db = client.db as u8;
            r
        })
    }

    /// Leaves `CLIENT LIST`.
    fn closed(&self, session: &mut RedisSession) {
        client::unregister(&self.shared, std::mem::replace(&mut session.slot, client::NO_SLOT));
        session.partial = None;
        self.shared.clients.fetch_sub(1, Ordering::Relaxed);
    }

    /// Advances `CLIENT LIST`'s coarse clock, then one bounded active-expiry step over
    /// the databases ([`Keyspace::active_expire`]), about 1 ms in all, starting from a
    /// different database each time.
    fn tick(&self) {
        let sh = &self.shared;
        client::tick(sh);
        let start = Instant::now();
        let first = sh.sweep_db.fetch_add(1, Ordering::Relaxed);
        for i in 0..DATABASES {
            let left = SWEEP_BUDGET.saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            sh.dbs[(first + i) % DATABASES].active_expire_within(left);
        }
    }
}

/// One Redis connection: 16 bytes. Its slot in the server's `CLIENT LIST` registry (where
/// its id, addresses, name and last command are), its selected database, and a command
/// read in part, boxed, only while one is (an idle connection holds no heap memory of its
/// own: the parser's buffers are per thread, the keyspace is the protocol's).
#[derive(Debug)]
pub struct RedisSession {
    /// Slot in the registry (`client.rs`), [`client::NO_SLOT`] when it has none.
    slot: u32,
    /// The selected database (`SELECT`, `0..DATABASES`).
    db: u8,
    /// The command at the front of the input, read in part (see `parse.rs`).
    partial: Option<Box<Partial>>,
}

/// Runs the commands at the front of `input` for `client` (see [`Redis::on_input`]).
#[inline(always)]
fn run(
    shared: &Shared,
    client: &mut Client,
    sc: &mut parse::Scratch,
    partial: &mut Option<Box<Partial>>,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<Progress, ProtoError> {
    let (mut pos, mut answered) = (0, 0);
    let start = out.len();
    while pos < input.len() {
        let rest = &input[pos..];
        let parsed = sc.parse(rest, &shared.cfg, partial).map_err(|e| e.after(answered))?;
        match parsed {
            Parsed::Incomplete => {
                let p = Progress::answered(pos, answered, false);
                return Ok(p.with_pending(Pending::Head));
            }
            Parsed::Skip(n) => pos += n,
            Parsed::Command { len, inline } => {
                let buf = if inline { &sc.scratch[..] } else { rest };
                let args = Args::new(buf, &sc.ranges);
                let close = commands::execute(shared, client, &args, out);
                if client.reply_refused {
                    let reply = b"-ERR reply exceeds the output limit\r\n";
                    return Err(ProtoError::new("output_limit", &reply[..]).after(answered));
                }
                pos += len;
                answered += 1;
                if close {
                    return Ok(Progress::answered(pos, answered, true));
                }
                if out.len() - start >= shared.cfg.output_budget {
                    // The rest waits until this output has drained.
                    return Ok(Progress::answered(pos, answered, false));
                }
            }
        }
    }
    Ok(Progress::answered(pos, answered, false))
}
