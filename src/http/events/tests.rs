use std::sync::Arc;

use super::{EventLog, Next, REPLAY};

fn id(next: Next) -> Option<u64> {
    match next {
        Next::Event(id, _) => Some(id),
        Next::Wait | Next::Closed => None,
    }
}

#[test]
fn a_stream_reads_events_in_order_then_waits() {
    let log = EventLog::default();
    for n in 0..3 {
        log.push(Arc::from(format!("{{\"n\":{n}}}")));
    }
    assert_eq!(id(log.next_after(0)), Some(1));
    assert_eq!(id(log.next_after(1)), Some(2));
    match log.next_after(3) {
        Next::Wait => {}
        _ => panic!("expected to wait past the newest event"),
    }
}

#[test]
fn a_stream_that_fell_behind_resumes_at_the_oldest_kept_event() {
    let log = EventLog::default();
    for _ in 0..REPLAY + 5 {
        log.push(Arc::from("{}"));
    }
    assert_eq!(id(log.next_after(0)), Some(6));
    assert_eq!(
        id(log.next_after(REPLAY as u64 + 4)),
        Some(REPLAY as u64 + 5)
    );
}

#[test]
fn a_last_event_id_past_the_newest_does_not_hold_back_new_events() {
    let log = EventLog::default();
    log.push(Arc::from("{}"));
    let last = log.clamp(999);
    assert_eq!(last, 1);
    log.push(Arc::from("{}"));
    assert_eq!(id(log.next_after(last)), Some(2));
}

#[test]
fn a_closed_log_still_delivers_what_it_kept_then_ends() {
    let log = EventLog::default();
    log.push(Arc::from("{}"));
    log.close();
    assert_eq!(id(log.next_after(0)), Some(1));
    match log.next_after(1) {
        Next::Closed => {}
        _ => panic!("expected the stream to end"),
    }
}
