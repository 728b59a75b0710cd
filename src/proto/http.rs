//! HTTP/1.1 (placeholder, being written).
