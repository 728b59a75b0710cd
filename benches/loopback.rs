//! Placeholder: criterion loopback echo benchmark (being written).
fn main() {}
