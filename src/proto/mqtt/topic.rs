//! Topic names and topic filters (MQTT 3.1.1 §4.7): validation against [`Limits`]
//! and matching with the `+` (one level) and `#` (the rest) wildcards. A topic starting
//! with `$` is not matched by a filter starting with a wildcard ([MQTT-4.7.2-1]).

use super::Limits;

fn within(s: &str, limits: &Limits) -> bool {
    !s.is_empty()
        && s.len() <= limits.max_topic_len
        && s.bytes().filter(|&b| b == b'/').count() < limits.max_topic_levels
}

/// A topic name a PUBLISH may use: non-empty, no wildcards, within the limits.
pub fn valid_name(t: &str, limits: &Limits) -> bool {
    within(t, limits) && !t.contains(['+', '#'])
}

/// A topic filter a SUBSCRIBE may use: non-empty, within the limits, `+` alone in its
/// level, `#` alone in the last level.
pub fn valid_filter(f: &str, limits: &Limits) -> bool {
    if !within(f, limits) {
        return false;
    }
    let mut levels = f.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        if level.contains('#') && (level != "#" || !last) {
            return false;
        }
        if level.contains('+') && level != "+" {
            return false;
        }
    }
    true
}

/// True when `filter` (valid) matches `topic` (a valid name).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}
