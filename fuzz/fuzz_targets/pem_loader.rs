//! `cargo fuzz run pem_loader`: see logic/pem_loader.rs for what is exercised and which properties hold.
#![no_main]

#[path = "logic/pem_loader.rs"]
mod logic;

libfuzzer_sys::fuzz_target!(|data: &[u8]| logic::run(data));
