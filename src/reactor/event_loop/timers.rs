//! A loop's timers: how long a poll may block, the handler's tick, the accept back-off
//! and close-flush deadlines coming due, and the connection timer wheel (idle and
//! incomplete-request timeouts; see `timer.rs` for the wheel itself).

use std::time::{Duration, Instant};

use log::error;

use super::conn::{CLOSING, Connection};
use super::{EventLoop, guard};
use crate::reactor::config::Config;
use crate::reactor::handler::{CloseReason, EventHandler};
use crate::reactor::stats::bump;
use crate::reactor::timer::{Tick, TimerWheel};

/// Connection timeouts in wheel ticks, when any is configured.
#[derive(Clone, Copy)]
pub(super) struct Timeouts {
    idle: Option<Tick>,
    request: Option<Tick>,
}

impl Timeouts {
    /// The timeouts `config` asks for; `None` when it asks for none.
    pub(super) fn of(config: &Config) -> Option<Timeouts> {
        (config.idle_timeout.is_some() || config.request_timeout.is_some()).then(|| Timeouts {
            idle: config.idle_timeout.map(TimerWheel::ticks),
            request: config.request_timeout.map(TimerWheel::ticks),
        })
    }

    /// The tick at which `c` times out, as its stamps stand now.
    fn deadline<S>(&self, c: &Connection<S>) -> Option<Tick> {
        let idle = self.idle.map(|t| c.active.saturating_add(t));
        let request =
            self.request.filter(|_| !c.input.is_empty()).map(|t| c.partial_since.saturating_add(t));
        match (idle, request) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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
            self.draining,
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
            && self.draining.is_none()
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
            let Some(c) = self.conns.get_mut(key) else { continue };
            if c.generation != generation || c.timer_at != tick || c.has(CLOSING) {
                continue;
            }
            c.timer_at = Tick::MAX;
            let request_due = timeouts.request.is_some_and(|t| {
                !c.input.is_empty() && c.partial_since.saturating_add(t) <= self.now_tick
            });
            let idle_due =
                timeouts.idle.is_some_and(|t| c.active.saturating_add(t) <= self.now_tick);
            if request_due {
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
