//! `cargo fuzz run jsonrpc_envelope`: see logic/jsonrpc_envelope.rs for what is exercised and which properties hold.
#![no_main]

#[path = "logic/jsonrpc_envelope.rs"]
mod logic;

libfuzzer_sys::fuzz_target!(|data: &[u8]| logic::run(data));
