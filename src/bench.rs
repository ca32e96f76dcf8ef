//! Throughput measurement (placeholder; being written).
