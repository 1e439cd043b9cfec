//! `cargo fuzz run config_loader`: see logic/config_loader.rs for what is exercised and which properties hold.
#![no_main]

#[path = "logic/config_loader.rs"]
mod logic;

libfuzzer_sys::fuzz_target!(|data: &[u8]| logic::run(data));
