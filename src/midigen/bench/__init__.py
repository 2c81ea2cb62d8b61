"""`midigen bench`: side-by-side benchmarks; the rows are listed in `midigen.bench.runner`."""
