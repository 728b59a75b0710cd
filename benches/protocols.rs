//! Placeholder: criterion benchmarks of the protocol parsers (being written).
fn main() {}
