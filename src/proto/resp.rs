//! Redis RESP2 (placeholder, being written).
