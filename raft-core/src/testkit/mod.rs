//! Deterministic simulator, checkers and test helpers (feature `testkit`).
