//! A loop's timers: how long a poll may block, the handler's tick, the accept back-off
//! and close-flush deadlines coming due, connect timeouts (the dialer's wheel, see
//! `connect.rs`), and the connection timer wheel (idle and incomplete-request timeouts,
//! and the handler's request deadlines set with `Conn::set_request_deadline`; see
//! `timer.rs` for the wheel itself).

use std::time::{Duration, Instant};

use log::error;

use super::conn::{CLOSING, Connection};
use super::{EventLoop, guard};
use crate::reactor::config::Config;
use crate::reactor::handler::{Action, CloseReason, EventHandler};
use crate::reactor::stats::bump;
use crate::reactor::timer::{Tick, TimerWheel};

/// Connection timeouts in wheel ticks, when any is configured.
#[derive(Clone, Copy)]
pub(super) struct Timeouts {
    idle: Option<Tick>,
    request: Option<Tick>,
    /// The soft output limit's period.
    soft_output: Option<Tick>,
}

impl Timeouts {
    /// The timeouts `config` asks for; `None` when it asks for none.
    pub(super) fn of(config: &Config) -> Option<Timeouts> {
        let soft = config.max_output_soft.map(|(_, period)| period);
        (config.idle_timeout.is_some() || config.request_timeout.is_some() || soft.is_some()).then(
            || Timeouts {
                idle: config.idle_timeout.map(TimerWheel::ticks),
                request: config.request_timeout.map(TimerWheel::ticks),
                soft_output: soft.map(TimerWheel::ticks),
            },
        )
    }

    /// The tick at which `c` times out, as its stamps stand now.
    fn deadline<S>(&self, c: &Connection<S>) -> Option<Tick> {
        let idle = self.idle.map(|t| c.active.saturating_add(t));
        let request = self.request.zip(c.partial_since()).map(|(t, since)| since.saturating_add(t));
        let handler = (c.deadline != Tick::MAX).then_some(c.deadline);
        let over_soft = c.over_soft();
        let soft = self.soft_output.filter(|_| over_soft != Tick::MAX);
        let soft = soft.map(|t| over_soft.saturating_add(t));
        [idle, request, handler, soft].into_iter().flatten().min()
    }
}

impl<H: EventHandler> EventLoop<H> {
    /// How long the next poll may block: until the nearest timer, or not at all when a
    /// budget left work over.
    pub(super) fn poll_timeout(&self) -> Option<Duration> {
        if !self.more_to_read.is_empty() || !self.more_datagrams.is_empty() {
            return Some(Duration::ZERO);
        }
        let deadline = [
            self.next_tick,
            self.accepting.retry_at(),
            self.closing.front().map(|c| c.2),
            self.wheel.next_deadline(),
            self.ctx.dialer.next_deadline(),
            self.draining,
            self.headers.next_deadline(),
            self.handshake_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()?;
        Some(deadline.saturating_duration_since(Instant::now()))
    }

    /// Runs whatever timers have come due (no clock read when none is set).
    pub(super) fn run_timers(&mut self) {
        if self.next_tick.is_none()
            && self.accepting.retry_at().is_none()
            && self.closing.is_empty()
            && self.wheel.next_deadline().is_none()
            && self.ctx.dialer.next_deadline().is_none()
            && self.draining.is_none()
            && self.headers.next_deadline().is_none()
            && self.handshake_deadline().is_none()
        {
            return;
        }
        let now = Instant::now();
        if self.next_tick.is_some_and(|t| t <= now) {
            self.run_tick(now);
        }
        self.accept_after_back_off(now);
        self.expire_closing(now);
        if self.wheel.next_deadline().is_some_and(|t| t <= now) {
            self.expire_timeouts(now);
        }
        self.expire_connects(now);
        self.expire_proxy_headers(now);
        if self.draining.is_some_and(|t| t <= now) {
            self.stop = true;
        }
        self.expire_handshakes(now);
    }

    /// Calls the handler's tick and schedules the next one.
    pub(super) fn run_tick(&mut self, now: Instant) {
        let handler = &mut self.handler;
        match guard(self.parts.config.catch_panics, || handler.tick()) {
            Ok(next) => self.next_tick = next.map(|d| now + d),
            Err(msg) => {
                bump(&self.stats.panics, 1);
                error!("loop {}: tick panicked: {msg}; ticking stops", self.parts.id);
                self.next_tick = None;
            }
        }
    }

    /// Closes connections whose idle or incomplete-request timeout has passed, and
    /// moves the others' wheel entries to their current deadlines.
    fn expire_timeouts(&mut self, now: Instant) {
        let Some(timeouts) = self.timeouts else { return };
        self.now_tick = self.wheel.tick_of(now);
        let mut expired = std::mem::take(&mut self.expired);
        self.wheel.expire(now, &mut expired);
        for &(key, generation, tick) in &expired {
            let key = key as usize;
            let Some(c) = self.conns.get_mut(key) else { continue };
            // (The entry holds the generation's low half: see `timer::Entry`.)
            if c.generation as u32 != generation || c.timer_at != tick || c.has(CLOSING) {
                continue;
            }
            c.timer_at = Tick::MAX;
            let request_due = timeouts
                .request
                .zip(c.partial_since())
                .is_some_and(|(t, since)| since.saturating_add(t) <= self.now_tick);
            let idle_due =
                timeouts.idle.is_some_and(|t| c.active.saturating_add(t) <= self.now_tick);
            let soft_due = timeouts
                .soft_output
                .is_some_and(|t| c.over_soft().saturating_add(t) <= self.now_tick);
            if soft_due {
                bump(&self.stats.output_limit_closes, 1);
                self.close(key, CloseReason::OutputLimit);
            } else if c.deadline <= self.now_tick {
                c.deadline = Tick::MAX;
                bump(&self.stats.request_timeouts, 1);
                self.deadline_passed(key);
                self.schedule_if_open(key);
            } else if request_due {
                bump(&self.stats.request_timeouts, 1);
                self.close(key, CloseReason::RequestTimeout);
            } else if idle_due {
                bump(&self.stats.idle_timeouts, 1);
                self.close(key, CloseReason::IdleTimeout);
            } else {
                self.schedule(key);
            }
        }
        expired.clear();
        self.expired = expired;
    }

    /// The handler's request deadline of `key` passed: its `timeout` callback decides
    /// (by default a close, reported as `RequestTimeout` when nothing was written).
    fn deadline_passed(&mut self, key: usize) {
        let action = self.dispatch(key, |h, conn, state| h.timeout(conn, state));
        let quiet = self.wbuf.is_empty() && self.conns.get(key).is_some_and(|c| c.pending() == 0);
        if action == Action::Close && quiet {
            self.close(key, CloseReason::RequestTimeout);
        } else {
            self.after_callback(key, action);
        }
    }

    /// [`schedule`](Self::schedule) for a connection that may have been closed meanwhile.
    fn schedule_if_open(&mut self, key: usize) {
        if self.conns.get(key).is_some_and(|c| !c.has(CLOSING)) {
            self.schedule(key);
        }
    }

    /// Sets (`Some`) or clears (`None`) the handler's request deadline of `key`, `after`
    /// from the current wheel tick. The first deadline on a loop without configured
    /// timeouts turns its wheel time on. A cleared deadline leaves its wheel entry to be
    /// recomputed lazily when it comes due.
    pub(super) fn set_deadline(&mut self, key: usize, after: Option<Duration>) {
        let Some(after) = after else {
            if let Some(c) = self.conns.get_mut(key) {
                c.deadline = Tick::MAX;
            }
            return;
        };
        if self.timeouts.is_none() {
            self.timeouts = Some(Timeouts { idle: None, request: None, soft_output: None });
            let now = Instant::now();
            // The wheel is empty (nothing was scheduled without timeouts): this only
            // moves its clock to now.
            self.wheel.expire(now, &mut self.expired);
            self.now_tick = self.wheel.tick_of(now);
        }
        let Some(c) = self.conns.get_mut(key) else { return };
        c.deadline = self.now_tick.saturating_add(TimerWheel::ticks(after));
        self.schedule(key);
    }

    /// Makes sure the wheel holds an entry no later than `key`'s current deadline.
    pub(super) fn schedule(&mut self, key: usize) {
        let Some(timeouts) = self.timeouts else { return };
        let c = &mut self.conns[key];
        let Some(due) = timeouts.deadline(c) else { return };
        if c.timer_at == Tick::MAX || due < c.timer_at {
            c.timer_at = due;
            self.wheel.insert(key, c.generation, due);
        }
    }
}
