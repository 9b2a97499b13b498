"""Speed, memory, accuracy and measuring-cost comparisons that print tables: ``python -m benchmarks.<name>``."""
