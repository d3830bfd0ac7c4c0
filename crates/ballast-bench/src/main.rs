//! Load generator for the benchmarks (work in progress).

fn main() {}
