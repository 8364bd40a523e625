"""Scenarios: guest, host and attacks put together, as the demo and the tests run them."""
