//! The fuzz corpus as a stable regression suite: every file in `fuzz/corpus/<target>/` goes
//! through the same logic the `cargo fuzz` target runs (`fuzz/fuzz_targets/logic/`), so a crash
//! found once, and the hand-made edge cases, are replayed by every `cargo test` without
//! nightly or libFuzzer. A panic names the target and the file.

#[path = "../fuzz/fuzz_targets/logic/config_loader.rs"]
mod config_loader;
#[path = "../fuzz/fuzz_targets/logic/jsonrpc_envelope.rs"]
mod jsonrpc_envelope;
#[path = "../fuzz/fuzz_targets/logic/pem_loader.rs"]
mod pem_loader;
#[path = "../fuzz/fuzz_targets/logic/sse_parser.rs"]
mod sse_parser;

use std::path::PathBuf;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{}: corpus too small", dir.display());
    for file in &files {
        let data = std::fs::read(file).unwrap();
        if std::panic::catch_unwind(|| run(&data)).is_err() {
            panic!("{target}: {} panicked", file.display());
        }
    }
}

#[test]
fn jsonrpc_envelope_corpus_replays_without_panics() {
    replay("jsonrpc_envelope", jsonrpc_envelope::run);
}

#[test]
fn sse_parser_corpus_replays_without_panics() {
    replay("sse_parser", sse_parser::run);
}

#[test]
fn config_loader_corpus_replays_without_panics() {
    replay("config_loader", config_loader::run);
}

#[test]
fn pem_loader_corpus_replays_without_panics() {
    replay("pem_loader", pem_loader::run);
}

/// Regression (found by the sse_parser target): a byte-order mark at the start of an upstream's
/// event stream made eventsource-stream panic, also when the BOM arrives split over chunks, and
/// (found by a longer run) when two BOMs follow each other.
#[test]
fn event_stream_starting_with_a_byte_order_mark_parses_even_split_over_chunks() {
    for body in [
        &b"\xEF\xBB\xBFdata: {\"a\":1}\n\n"[..],
        &b"\xEF\xBB\xBF\xEF\xBB\xBF\xEF\xBB\xBFdata: {\"a\":1}\n\n"[..],
    ] {
        replay_bom(body);
    }
}

fn replay_bom(body: &[u8]) {
    use eventsource_stream::Eventsource;
    use futures_util::{FutureExt, StreamExt};
    for split in 1..=7 {
        let chunks: Vec<Result<bytes::Bytes, std::convert::Infallible>> = body
            .chunks(split)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let mut events =
            mcpgw::upstream::streamable::without_bom(futures_util::stream::iter(chunks))
                .eventsource();
        let event = events.next().now_or_never().flatten().unwrap().unwrap();
        assert_eq!(event.data, "{\"a\":1}", "chunks of {split}");
    }
}
