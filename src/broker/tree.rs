//! The subscription tree: one node per topic level, subscribers at the node where their
//! filter ends, `+` and `#` stored as ordinary child names and followed while matching.

use std::collections::HashMap;
use std::sync::Arc;

use super::Session;

/// One level of the tree.
#[derive(Default)]
pub(crate) struct Node {
    children: HashMap<Box<str>, Node>,
    /// Sessions whose filter ends here, by session id, with their granted QoS.
    subs: HashMap<u64, (Arc<Session>, u8)>,
}

impl Node {
    /// Adds (or replaces) `session`'s subscription to `filter`; true when it is new.
    pub(crate) fn insert(&mut self, filter: &str, session: &Arc<Session>, qos: u8) -> bool {
        let mut node = self;
        for level in filter.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        node.subs.insert(session.id, (session.clone(), qos)).is_none()
    }

    /// Removes `session_id`'s subscription to `filter` (pruning empty nodes); true when
    /// there was one.
    pub(crate) fn remove(&mut self, filter: &str, session_id: u64) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        self.remove_at(&levels, session_id)
    }

    fn remove_at(&mut self, levels: &[&str], id: u64) -> bool {
        let Some((first, rest)) = levels.split_first() else {
            return self.subs.remove(&id).is_some();
        };
        let Some(child) = self.children.get_mut(*first) else { return false };
        let removed = child.remove_at(rest, id);
        if child.subs.is_empty() && child.children.is_empty() {
            self.children.remove(*first);
        }
        removed
    }

    /// Every subscription matching `topic`, merged per session (highest QoS wins), into
    /// `out`.
    pub(crate) fn matching(&self, topic: &str, out: &mut HashMap<u64, (Arc<Session>, u8)>) {
        let levels: Vec<&str> = topic.split('/').collect();
        let dollar = topic.starts_with('$');
        self.walk(&levels, 0, dollar, out);
    }

    fn walk(
        &self,
        levels: &[&str],
        depth: usize,
        dollar: bool,
        out: &mut HashMap<u64, (Arc<Session>, u8)>,
    ) {
        let wild_ok = !(dollar && depth == 0);
        if wild_ok && let Some(hash) = self.children.get("#") {
            add(out, &hash.subs);
        }
        let Some((first, rest)) = levels.split_first() else {
            add(out, &self.subs);
            return;
        };
        if let Some(child) = self.children.get(*first) {
            child.walk(rest, depth + 1, dollar, out);
        }
        if wild_ok && let Some(plus) = self.children.get("+") {
            plus.walk(rest, depth + 1, dollar, out);
        }
    }
}

fn add(out: &mut HashMap<u64, (Arc<Session>, u8)>, subs: &HashMap<u64, (Arc<Session>, u8)>) {
    for (id, (s, q)) in subs {
        out.entry(*id).and_modify(|e| e.1 = e.1.max(*q)).or_insert_with(|| (s.clone(), *q));
    }
}
