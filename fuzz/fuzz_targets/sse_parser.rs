//! `cargo fuzz run sse_parser`: see logic/sse_parser.rs for what is exercised and which properties hold.
#![no_main]

#[path = "logic/sse_parser.rs"]
mod logic;

libfuzzer_sys::fuzz_target!(|data: &[u8]| logic::run(data));
