//! The subscription tree: one node per topic level, subscribers at the node where their
//! filter ends, `+` and `#` stored as ordinary child names and followed while matching.
//!
//! Most nodes have one child or one subscriber (a device's own `dev/42/cmd`), so both
//! maps start as a small vector and become a hash map past [`FEW`] entries: about
//! 300 bytes per such subscription instead of about 800 with hash maps throughout.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::Session;

/// Entries kept in a vector before a [`SmallMap`] becomes a hash map.
const FEW: usize = 8;

/// A map that is a vector while small (linear search) and a hash map when large.
enum SmallMap<K, V> {
    Few(Vec<(K, V)>),
    // Boxed on purpose: keeps the enum (and so every node) a vector's size.
    #[allow(clippy::box_collection)]
    Many(Box<HashMap<K, V>>),
}

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap::Few(Vec::new())
    }
}

impl<K: Eq + Hash, V> SmallMap<K, V> {
    fn get<Q: ?Sized + Eq + Hash>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        match self {
            SmallMap::Few(v) => v.iter().find(|(key, _)| key.borrow() == k).map(|(_, v)| v),
            SmallMap::Many(m) => m.get(k),
        }
    }

    fn get_mut<Q: ?Sized + Eq + Hash>(&mut self, k: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        match self {
            SmallMap::Few(v) => v.iter_mut().find(|(key, _)| key.borrow() == k).map(|(_, v)| v),
            SmallMap::Many(m) => m.get_mut(k),
        }
    }

    /// Inserts or replaces; true when the key is new.
    fn insert(&mut self, k: K, val: V) -> bool {
        if let Some(slot) = self.get_mut(k.borrow()) {
            *slot = val;
            return false;
        }
        match self {
            SmallMap::Few(v) if v.len() < FEW => {
                // Exact growth: most nodes hold one entry for their whole life.
                v.reserve_exact(1);
                v.push((k, val));
            }
            SmallMap::Few(v) => {
                let mut m: HashMap<K, V> = std::mem::take(v).into_iter().collect();
                m.insert(k, val);
                *self = SmallMap::Many(Box::new(m));
            }
            SmallMap::Many(m) => {
                m.insert(k, val);
            }
        }
        true
    }

    fn get_or_default<Q: ?Sized + Eq + Hash>(&mut self, k: &Q) -> &mut V
    where
        K: Borrow<Q> + for<'a> From<&'a Q>,
        V: Default,
    {
        if let SmallMap::Few(v) = self
            && v.len() >= FEW
            && !v.iter().any(|(key, _)| key.borrow() == k)
        {
            let m: HashMap<K, V> = std::mem::take(v).into_iter().collect();
            *self = SmallMap::Many(Box::new(m));
        }
        match self {
            SmallMap::Few(v) => {
                let i = match v.iter().position(|(key, _)| key.borrow() == k) {
                    Some(i) => i,
                    None => {
                        v.reserve_exact(1);
                        v.push((K::from(k), V::default()));
                        v.len() - 1
                    }
                };
                &mut v[i].1
            }
            SmallMap::Many(m) => m.entry(K::from(k)).or_default(),
        }
    }

    fn remove<Q: ?Sized + Eq + Hash>(&mut self, k: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        match self {
            SmallMap::Few(v) => {
                let i = v.iter().position(|(key, _)| key.borrow() == k)?;
                Some(v.swap_remove(i).1)
            }
            SmallMap::Many(m) => {
                let r = m.remove(k);
                if m.is_empty() {
                    *self = SmallMap::default();
                }
                r
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            SmallMap::Few(v) => v.is_empty(),
            SmallMap::Many(m) => m.is_empty(),
        }
    }

    fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        match self {
            SmallMap::Few(v) => v.iter().for_each(|(k, v)| f(k, v)),
            SmallMap::Many(m) => m.iter().for_each(|(k, v)| f(k, v)),
        }
    }
}

/// A level's name as a child key: up to [`INLINE`] bytes inline (most levels are short:
/// `dev`, `42`, `cmd`), so a level costs no allocation of its own; longer ones boxed.
/// 24 bytes. Looked up by its bytes (hashed as `[u8]`), so no UTF-8 check is needed.
enum Level {
    Inline { len: u8, bytes: [u8; INLINE] },
    Boxed(Box<[u8]>),
}

/// Longest level name kept inline in a [`Level`].
const INLINE: usize = 22;

impl Level {
    fn bytes(&self) -> &[u8] {
        match self {
            Level::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Level::Boxed(b) => b,
        }
    }
}

impl From<&[u8]> for Level {
    fn from(b: &[u8]) -> Level {
        let mut bytes = [0; INLINE];
        match (u8::try_from(b.len()), bytes.get_mut(..b.len())) {
            (Ok(len), Some(to)) => {
                to.copy_from_slice(b);
                Level::Inline { len, bytes }
            }
            _ => Level::Boxed(b.into()),
        }
    }
}

impl Borrow<[u8]> for Level {
    fn borrow(&self) -> &[u8] {
        self.bytes()
    }
}

impl PartialEq for Level {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for Level {}

impl Hash for Level {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `[u8]` hashes, so that `Borrow<[u8]>` lookups find it.
        self.bytes().hash(state);
    }
}

/// One level of the tree.
#[derive(Default)]
pub(crate) struct Node {
    children: SmallMap<Level, Node>,
    /// Sessions whose filter ends here, by [`Session::key`], with their granted QoS.
    subs: SmallMap<usize, (Arc<Session>, u8)>,
}

impl Node {
    /// Adds (or replaces) `session`'s subscription to `filter`; true when it is new.
    pub(crate) fn insert(&mut self, filter: &str, session: &Arc<Session>, qos: u8) -> bool {
        let mut node = self;
        for level in filter.split('/') {
            node = node.children.get_or_default(level.as_bytes());
        }
        node.subs.insert(session.key(), (session.clone(), qos))
    }

    /// Removes the subscription of the session with key `session_id` to `filter`
    /// (pruning empty nodes); true when there was one.
    pub(crate) fn remove(&mut self, filter: &str, session_id: usize) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        self.remove_at(&levels, session_id)
    }

    fn remove_at(&mut self, levels: &[&str], id: usize) -> bool {
        let Some((first, rest)) = levels.split_first() else {
            return self.subs.remove(&id).is_some();
        };
        let Some(child) = self.children.get_mut(first.as_bytes()) else { return false };
        let removed = child.remove_at(rest, id);
        if child.subs.is_empty() && child.children.is_empty() {
            self.children.remove(first.as_bytes());
        }
        removed
    }

    /// Every subscription matching `topic`, merged per session (highest QoS wins), into
    /// `out`.
    pub(crate) fn matching(&self, topic: &str, out: &mut HashMap<usize, (Arc<Session>, u8)>) {
        let dollar = topic.starts_with('$');
        self.walk(topic.split('/'), 0, dollar, out);
    }

    fn walk(
        &self,
        mut levels: std::str::Split<'_, char>,
        depth: usize,
        dollar: bool,
        out: &mut HashMap<usize, (Arc<Session>, u8)>,
    ) {
        let wild_ok = !(dollar && depth == 0);
        if wild_ok && let Some(hash) = self.children.get(b"#".as_slice()) {
            add(out, &hash.subs);
        }
        let Some(first) = levels.next() else {
            add(out, &self.subs);
            return;
        };
        // `levels` now holds the remaining levels; each branch walks its own copy.
        if let Some(child) = self.children.get(first.as_bytes()) {
            child.walk(levels.clone(), depth + 1, dollar, out);
        }
        if wild_ok && let Some(plus) = self.children.get(b"+".as_slice()) {
            plus.walk(levels, depth + 1, dollar, out);
        }
    }
}

fn add(out: &mut HashMap<usize, (Arc<Session>, u8)>, subs: &SmallMap<usize, (Arc<Session>, u8)>) {
    subs.for_each(|id, (s, q)| {
        out.entry(*id).and_modify(|e| e.1 = e.1.max(*q)).or_insert_with(|| (s.clone(), *q));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Session;

    fn ids(tree: &Node, topic: &str) -> Vec<(usize, u8)> {
        let mut out = HashMap::new();
        tree.matching(topic, &mut out);
        let mut v: Vec<(usize, u8)> = out.into_iter().map(|(id, (_, q))| (id, q)).collect();
        v.sort();
        v
    }

    #[test]
    fn match_insert_remove_across_the_small_and_large_forms() {
        let sessions: Vec<Arc<Session>> = (0..40).map(Session::for_test).collect();
        let mut t = Node::default();
        // 20 sessions on one filter (subs grow past FEW), 40 distinct levels (children too).
        for s in &sessions[..20] {
            assert!(t.insert("a/+/c", s, 0));
        }
        for (i, s) in sessions.iter().enumerate() {
            assert!(t.insert(&format!("a/{i}/c"), s, 1));
        }
        assert!(!t.insert("a/+/c", &sessions[0], 1), "replaced, not new");
        assert!(t.insert("#", &sessions[39], 0));
        let got = ids(&t, "a/5/c");
        assert!(got.contains(&(sessions[0].key(), 1)));
        assert!(got.contains(&(sessions[5].key(), 1)), "highest QoS wins");
        assert!(got.contains(&(sessions[39].key(), 0)));
        assert_eq!(got.len(), 21);
        assert_eq!(ids(&t, "$SYS/a"), vec![]);
        // Remove everything: the tree prunes back to empty.
        for s in &sessions[..20] {
            assert!(t.remove("a/+/c", s.key()));
        }
        for (i, s) in sessions.iter().enumerate() {
            assert!(t.remove(&format!("a/{i}/c"), s.key()));
        }
        assert!(!t.remove("a/1/c", sessions[1].key()));
        assert!(t.remove("#", sessions[39].key()));
        assert!(t.children.is_empty() && t.subs.is_empty());
    }

    #[test]
    fn long_and_short_level_names() {
        let s = Session::for_test(1);
        let long = "l".repeat(INLINE + 1);
        let mut t = Node::default();
        for f in [long.as_str(), "l", "", "é/ü"] {
            assert!(t.insert(f, &s, 0), "{f:?}");
        }
        assert!(size_of::<Level>() <= 24);
        assert_eq!(ids(&t, &long), vec![(s.key(), 0)]);
        assert_eq!(ids(&t, "é/ü"), vec![(s.key(), 0)]);
        assert_eq!(ids(&t, &"l".repeat(INLINE)), vec![]);
        assert!(t.remove(&long, s.key()));
        assert_eq!(ids(&t, &long), vec![]);
        assert_eq!(ids(&t, "l"), vec![(s.key(), 0)]);
    }
}
