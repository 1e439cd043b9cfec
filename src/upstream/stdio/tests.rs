use serde_json::json;
use tokio::io::{AsyncWriteExt, BufReader};

use super::frame::{self, Frame, Line};

fn answer(id: &str, body: &'static [u8]) -> Frame {
    Frame::Answer {
        id: id.into(),
        body: bytes::Bytes::from_static(body),
    }
}

#[tokio::test]
async fn answers_are_kept_as_they_came_and_everything_else_is_parsed() {
    let input = concat!(
        r#"{"jsonrpc":"2.0","id":"a\"b","error":{"code":1,"message":"no"}}"#,
        "\n",
        r#"{"jsonrpc":"2.0","id":5,"method":"sampling/createMessage","params":{}}"#,
        "\n",
        r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}"#,
        "\n",
        // Not valid JSON, though it looks like an answer.
        r#"{"id":6,"result":tru}"#,
        "\n",
    );
    let got = frames(input.as_bytes(), 1024).await;
    assert_eq!(
        got[0],
        answer(
            r#""a\"b""#,
            br#"{"jsonrpc":"2.0","id":"a\"b","error":{"code":1,"message":"no"}}"#
        )
    );
    assert_eq!(
        got[1],
        Frame::Message(
            json!({"jsonrpc": "2.0", "id": 5, "method": "sampling/createMessage", "params": {}})
        )
    );
    assert!(matches!(&got[2], Frame::Message(m) if m["method"] == "notifications/progress"));
    assert!(matches!(got[3], Frame::NotJson { .. }), "{got:?}");
}

/// The frames of `input`, read through a small buffer so lines span several reads.
async fn frames(input: &[u8], cap: usize) -> Vec<Frame> {
    let mut reader = BufReader::with_capacity(7, input);
    let mut out = Vec::new();
    while let Some(frame) = frame::read_frame(&mut reader, cap).await.unwrap() {
        out.push(frame);
    }
    out
}

#[tokio::test]
async fn messages_are_read_line_by_line_across_partial_reads_and_crlf() {
    let input = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\r\n\n  \n{\"jsonrpc\":\"2.0\",\"method\":\"x\"}";
    assert_eq!(
        frames(input, 1024).await,
        vec![
            answer("1", br#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            // The last line needs no newline.
            Frame::Message(json!({"jsonrpc": "2.0", "method": "x"})),
        ]
    );
}

#[tokio::test]
async fn a_line_that_is_not_a_json_object_is_skipped_and_the_next_one_read() {
    let input = b"Starting server...\n[1,2]\n{\"half\":\n{\"id\":2,\"result\":true}\n";
    let got = frames(input, 1024).await;
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(
        got[0],
        Frame::NotJson {
            excerpt: "Starting server...".into()
        }
    );
    assert!(matches!(got[1], Frame::NotJson { .. }));
    assert!(matches!(got[2], Frame::NotJson { .. }));
    assert_eq!(got[3], answer("2", br#"{"id":2,"result":true}"#));
}

#[tokio::test]
async fn a_line_over_the_cap_is_skipped_without_being_kept_and_the_next_one_read() {
    let mut input = vec![b'x'; 100];
    input.extend_from_slice(b"\n{\"id\":3,\"result\":1}\n");
    assert_eq!(
        frames(&input, 64).await,
        vec![
            Frame::TooLong { len: 100 },
            answer("3", br#"{"id":3,"result":1}"#)
        ]
    );
    // A message of exactly the cap is a message.
    let exact = br#"{"id":4,"result":"abcdefgh"}"#;
    assert_eq!(frames(exact, exact.len()).await, vec![answer("4", exact)]);
}

#[tokio::test]
async fn a_log_line_over_the_cap_keeps_its_head() {
    let input = b"0123456789abcdef\nshort\n";
    let mut reader = BufReader::with_capacity(3, &input[..]);
    let first = frame::read_line(&mut reader, 10, true).await.unwrap();
    assert_eq!(
        first,
        Some(Line {
            bytes: b"0123456789".to_vec(),
            len: 16
        })
    );
    assert!(first.unwrap().too_long());
    let second = frame::read_line(&mut reader, 10, true).await.unwrap();
    assert_eq!(
        second,
        Some(Line {
            bytes: b"short".to_vec(),
            len: 5
        })
    );
    assert_eq!(frame::read_line(&mut reader, 10, true).await.unwrap(), None);
}

#[test]
fn a_pretty_printed_message_is_sent_as_one_line() {
    let body = b"{\n  \"id\": 1,\r\n  \"method\": \"a\\nb\"\n}";
    let line = frame::line_of(body);
    assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
    assert_eq!(line.last(), Some(&b'\n'));
    let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
    // An escaped newline inside a string is kept as it was.
    assert_eq!(value, json!({"id": 1, "method": "a\nb"}));
}

#[tokio::test]
async fn concurrent_sends_never_interleave() {
    let (client, server) = tokio::io::duplex(64);
    let writer = std::sync::Arc::new(frame::Writer::new(client));
    let mut sends = Vec::new();
    for n in 0..20 {
        let writer = writer.clone();
        sends.push(tokio::spawn(async move {
            let body = serde_json::to_vec(&json!({"id": n, "result": "y".repeat(300)})).unwrap();
            writer.send(&body).await.unwrap();
        }));
    }
    let reading = tokio::spawn(async move {
        let mut reader = BufReader::new(server);
        let mut ids = Vec::new();
        while let Some(frame) = frame::read_frame(&mut reader, 4096).await.unwrap() {
            match frame {
                Frame::Answer { id, .. } => ids.push(id.parse::<u64>().unwrap()),
                other => panic!("interleaved: {other:?}"),
            }
        }
        ids
    });
    for send in sends {
        send.await.unwrap();
    }
    writer.close().await;
    let mut ids = reading.await.unwrap();
    ids.sort_unstable();
    assert_eq!(ids, (0..20).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_closed_writer_refuses_to_send() {
    let (client, mut server) = tokio::io::duplex(64);
    let writer = frame::Writer::new(client);
    writer.close().await;
    assert!(writer.send(b"{}").await.is_err());
    server.shutdown().await.unwrap();
}

#[test]
fn a_diagnosis_shown_to_clients_leaves_the_childs_stderr_out() {
    let tail = super::stderr::Tail::default();
    assert_eq!(tail.note(), "", "nothing written, nothing noted");
    tail.push("API_KEY=k-123 refused".into());
    let diagnosis = format!("the child exited (status 1){}", tail.note());
    assert!(
        diagnosis.contains("k-123"),
        "the operator's form keeps it: {diagnosis}"
    );
    assert_eq!(
        super::without_note(&diagnosis),
        "the child exited (status 1)"
    );
    assert_eq!(
        super::without_note("connection refused"),
        "connection refused"
    );
}

/// A pipe end that records each write it is given.
#[derive(Clone, Default)]
struct Recording {
    writes: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl tokio::io::AsyncWrite for Recording {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.writes.lock().unwrap().push(buf.to_vec());
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn messages_queued_together_reach_the_child_in_one_write_and_a_close_writes_them_first() {
    let pipe = Recording::default();
    let writer = frame::Writer::new(pipe.clone());
    // On this single-threaded runtime the writer's task has not run yet: all ten wait for it.
    for n in 0..10 {
        send_numbered(&writer, n).await;
    }
    writer.close().await;
    assert_eq!(the_one_write(&pipe), numbered(0..10), "in the order sent");
    assert!(writer.send(b"{}").await.is_err(), "closed: no more sends");
}

/// Send the message `{"id":n}`.
async fn send_numbered(writer: &frame::Writer, n: usize) {
    writer
        .send(format!(r#"{{"id":{n}}}"#).as_bytes())
        .await
        .unwrap();
}

/// The lines of the one write `pipe` was given (failing if it was given more or none).
fn the_one_write(pipe: &Recording) -> Vec<String> {
    let writes = pipe.writes.lock().unwrap().clone();
    let texts: Vec<_> = writes.iter().map(|w| String::from_utf8_lossy(w)).collect();
    assert_eq!(writes.len(), 1, "one write for the queued lines: {texts:?}");
    texts[0].lines().map(str::to_owned).collect()
}

/// The lines `{"id":n}` for `ids`.
fn numbered(ids: std::ops::Range<usize>) -> Vec<String> {
    ids.map(|n| format!(r#"{{"id":{n}}}"#)).collect()
}

/// Callers that the runtime runs in one turn share a write, even when the writer's task is
/// woken by the first of them before the others have run: on the multi-threaded runtime a task
/// woken by a running one runs next (tokio's LIFO slot), ahead of the callers already due.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn callers_due_in_the_same_turn_share_one_write() {
    let pipe = Recording::default();
    let writer = std::sync::Arc::new(frame::Writer::new(pipe.clone()));
    // Let the writer's task reach its wait for the first line.
    tokio::task::yield_now().await;
    // Spawned from a task on the worker, the callers wait in its own queue, all due at once
    // (from the test's thread they would reach the worker one by one).
    let spawner = writer.clone();
    tokio::spawn(async move {
        let callers = (0..4)
            .map(|n| {
                let writer = spawner.clone();
                tokio::spawn(async move { send_numbered(&writer, n).await })
            })
            .collect::<Vec<_>>();
        for caller in callers {
            caller.await.unwrap();
        }
    })
    .await
    .unwrap();
    // Written by now or at the close; the close adds no write of its own for lines it finds
    // written, so the count is the writer's doing.
    writer.close().await;
    // In the order the runtime ran the callers (the last spawned first, from the LIFO slot).
    let mut lines = the_one_write(&pipe);
    lines.sort();
    assert_eq!(lines, numbered(0..4));
}

#[tokio::test]
async fn a_child_that_stopped_reading_makes_later_sends_fail() {
    let (client, server) = tokio::io::duplex(64);
    let writer = frame::Writer::new(client);
    drop(server);
    // The first message may be queued before the write fails; once it has, sends fail.
    let mut refused = false;
    for _ in 0..100 {
        if writer.send(b"{}").await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(refused, "a send after the pipe broke is refused");
}
