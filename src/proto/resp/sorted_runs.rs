//! Comparing replies whose order is unspecified (`KEYS`, `SCAN`'s keys): each run of
//! consecutive bulk strings sorted. Shared by the unit tests' golden files and the live
//! comparison with redis-server (`tests/redis_compat.rs` includes this file by path).

/// A reply with each run of consecutive bulk strings sorted (for `~` lines: replies
/// whose order is unspecified, such as `KEYS` and `SCAN`'s keys).
pub(crate) fn sorted_runs(reply: &[u8]) -> Vec<u8> {
    let mut items: Vec<&[u8]> = Vec::new();
    let mut i = 0;
    while i < reply.len() {
        let Some(nl) = reply[i..].iter().position(|&b| b == b'\n') else {
            break;
        };
        let mut end = i + nl + 1;
        if reply[i] == b'$' {
            let n: usize = std::str::from_utf8(&reply[i + 1..i + nl - 1])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            end = (end + n + 2).min(reply.len());
        }
        items.push(&reply[i..end]);
        i = end;
    }
    let mut out = Vec::new();
    let mut k = 0;
    while k < items.len() {
        let mut j = k;
        while j < items.len() && items[j].first() == Some(&b'$') {
            j += 1;
        }
        if j == k {
            out.extend_from_slice(items[k]);
            k += 1;
        } else {
            let mut run = items[k..j].to_vec();
            run.sort();
            run.iter().for_each(|x| out.extend_from_slice(x));
            k = j;
        }
    }
    out
}
