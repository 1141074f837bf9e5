"""Example models (`cipm.testing.zoo`) and small data (`cipm.testing.data`) for the tests,
examples, benchmarks and `cipm inspect`. Plain PyTorch: the library's core never uses them."""
