//! The Raft protocol for one group as a pure state machine: no I/O, no clock,
//! no threads, no async. Time is `tick()`, randomness a seeded RNG, output a
//! `Ready` batch that the caller persists, sends and applies.
