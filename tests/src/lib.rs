//! End-to-end tests of the `zoo` binary and parity tests against committed fixtures.
