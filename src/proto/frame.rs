//! Length-prefixed frames (placeholder, being written).
