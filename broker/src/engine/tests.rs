//! Unit tests of the engine (filled in by the next commit).
