"""The built-in examples: a catalog of example models (`cipm.examples.catalog`, the names
`cipm inspect` and the tests build) and small data (`cipm.examples.data`) for the tests,
examples and benchmarks. Plain PyTorch: the library's core never uses them."""
