//! Issue 22: sessions behind three gateways on one PostgreSQL store and HAProxy
//! ([`common::fleet`]): a Streamable-HTTP session is served by every instance, outlives the
//! one holding it with its subscriptions (its GET stream resumed elsewhere with
//! `Last-Event-ID`, updates passed to the instance where the client reads), is refused to
//! another principal and ends everywhere when deleted; an answer to an upstream's question and
//! a held 2026-07-28 call reach the instance that asked, whichever instance the client sends
//! them to.

mod common;

use std::time::{Duration, Instant};

use common::clients;
use common::fleet::{CLIENT, Fleet, INSTANCES, PROBE, client};
use common::load::CALL_TIMEOUT;
use common::upstream::Upstream;

#[test]
fn a_session_opened_through_the_balancer_is_served_by_every_instance() {
    let fleet = Fleet::start();
    let session = opened(&fleet, &clients::http(None), &fleet.proxy.mcp_url());
    // Round-robin without stickiness: these calls reach every instance, two of which did
    // not open the session.
    for id in 0..2 * INSTANCES {
        let answer = fleet
            .rt
            .block_on(session.call(
                serde_json::json!(id),
                "rs__echo",
                serde_json::json!({"text": "hi"}),
            ))
            .unwrap();
        assert!(answer.get("result").is_some(), "call {id}: {answer}");
    }
}

/// A Streamable-HTTP session of the client opened at `url`.
fn opened(fleet: &Fleet, http: &reqwest::Client, url: &str) -> clients::Streamable {
    fleet
        .rt
        .block_on(clients::Streamable::open(http.clone(), url, Some(CLIENT)))
        .unwrap()
}

/// A request of session `id` on instance `url`, as `bearer`, in the session era.
fn in_session(
    http: &reqwest::Client,
    url: &str,
    id: &str,
    bearer: &str,
    method: reqwest::Method,
) -> reqwest::RequestBuilder {
    http.request(method, url)
        .bearer_auth(bearer)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", id)
        .header("mcp-protocol-version", "2025-11-25")
}

/// [`in_session`] as the client, sent: the answer's status and body.
async fn sent(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    id: &str,
    msg: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut request = in_session(http, url, id, CLIENT, method);
    if let Some(msg) = msg {
        request = request.json(msg);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    let body = answer.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// Ask the fixture at `up_base` to touch `uri` until `events` shows an update of it (20 s at
/// most); `what` says where it should have come.
async fn touch_until_seen(
    http: &reqwest::Client,
    up_base: &str,
    uri: &str,
    events: &mut clients::EventReader,
    what: &str,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let told = http
            .post(format!("{up_base}/touch?uri={uri}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let seen = events
            .next_where(|m| m["params"]["uri"] == uri, Duration::from_millis(300))
            .await;
        if let Some(note) = seen {
            return note;
        }
        assert!(Instant::now() < deadline, "{what} (upstream said {told})");
    }
}

#[test]
fn a_session_outlives_its_instance_with_its_subscriptions_and_ends_everywhere_when_deleted() {
    let mut fleet = Fleet::start();
    let http = client();
    let at = |i: usize| format!("http://{}", fleet.instances[i].gw.addr);
    let (one, two) = (at(1), at(2));
    let uri = "test://watched-resource";
    let session = opened(&fleet, &http, &format!("{}/servers/rs/mcp", at(0)));
    let id = session.session.clone();
    let subscribe = serde_json::json!({"jsonrpc": "2.0", "id": 1,
        "method": "resources/subscribe", "params": {"uri": uri}});
    let answer = fleet.rt.block_on(session.request(&subscribe)).unwrap();
    assert!(answer.get("result").is_some(), "{answer}");

    // The instance that opened the session and holds its subscription dies.
    fleet.instances[0].gw.signal(9);
    let _ = fleet.instances[0].gw.wait_exit(Duration::from_secs(10));

    fleet.rt.block_on(async {
        // Another principal naming it is told it does not exist, on any instance.
        let foreign = in_session(
            &http,
            &format!("{two}/mcp"),
            &id,
            PROBE,
            reqwest::Method::GET,
        )
        .send()
        .await
        .unwrap();
        assert_eq!(foreign.status(), 404, "another principal's session");

        // Its client resumes its stream on instance 1 with the last id it saw there: the
        // session is taken in from the store and its subscription made again.
        let stream = in_session(
            &http,
            &format!("{one}/mcp"),
            &id,
            CLIENT,
            reqwest::Method::GET,
        )
        .header("last-event-id", "7")
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
        let mut events = clients::EventReader::new(stream);
        let what = format!(
            "no update reached the session on instance 1\n{}",
            fleet.logs()
        );
        let note = touch_until_seen(&http, &fleet.up.base, uri, &mut events, &what).await;
        assert_eq!(note["method"], "notifications/resources/updated", "{note}");

        // A subscription made through instance 2, whose update comes to instance 2, reaches the
        // stream the client reads on instance 1 (passed on through the store).
        let other = "test://other-resource";
        let subscribe = serde_json::json!({"jsonrpc": "2.0", "id": 3,
            "method": "resources/subscribe", "params": {"uri": other}});
        let on_two = format!("{two}/servers/rs/mcp");
        let (_, answer) = sent(&http, reqwest::Method::POST, &on_two, &id, Some(&subscribe)).await;
        assert!(answer.get("result").is_some(), "{answer}");
        let what = format!(
            "an update that came to instance 2 did not reach the stream on instance 1\n{}",
            fleet.logs()
        );
        touch_until_seen(&http, &fleet.up.base, other, &mut events, &what).await;

        // The same for an update too long for a notice (its URI alone is 10,000 bytes): it is
        // kept in the store, and the notice names it.
        let long = format!("test://long-{}", "x".repeat(10_000));
        let subscribe = serde_json::json!({"jsonrpc": "2.0", "id": 4,
            "method": "resources/subscribe", "params": {"uri": long}});
        let (_, answer) = sent(&http, reqwest::Method::POST, &on_two, &id, Some(&subscribe)).await;
        assert!(answer.get("result").is_some(), "{answer}");
        let what = format!(
            "an update too long for a notice did not reach the stream on instance 1\n{}",
            fleet.logs()
        );
        touch_until_seen(&http, &fleet.up.base, &long, &mut events, &what).await;

        // Calls go on through instance 2 under the same id.
        let call = serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "still here"}}});
        let (_, answer) = sent(&http, reqwest::Method::POST, &on_two, &id, Some(&call)).await;
        assert!(clients::text(&answer).contains("still here"), "{answer}");

        // Ended through instance 2: instance 1, which holds it too, lets it go as well.
        let (deleted, _) = sent(
            &http,
            reqwest::Method::DELETE,
            &format!("{two}/mcp"),
            &id,
            None,
        )
        .await;
        assert_eq!(deleted, 204);
        let on_one = format!("{one}/servers/rs/mcp");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, _) = sent(&http, reqwest::Method::POST, &on_one, &id, Some(&call)).await;
            if status == 404 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "instance 1 still serves a deleted session ({status})\n{}",
                fleet.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// An upstream's question (elicitation) reaches the client on the instance serving its call,
/// and the client's answer, taken by the balancer to another instance, is passed back to the
/// one that asked.
#[test]
fn an_answer_to_an_upstreams_question_reaching_another_instance_goes_back_to_the_one_that_asked() {
    use common::py::{self, PyUpstream};
    let fleet = Fleet::start();
    let python = py::python();
    let dir = &fleet.instances[0].dir;
    let pki = dir.cert_gen("pki", &[]);
    let args = ["--transport", "streamable-http", "--input-tool"];
    let up = PyUpstream::with_pki(&python, py::free_port(), &pki, &args);
    dir.gateway_add_mtls("py", &format!("https://localhost:{}/mcp", up.port), &pki);
    let http = client();
    let at = |i: usize| format!("http://{}/servers/py/mcp", fleet.instances[i].gw.addr);
    fleet.rt.block_on(async {
        // Every instance knows the upstream (registered through instance 0).
        let deadline = Instant::now() + Duration::from_secs(20);
        for i in 1..INSTANCES {
            while http
                .post(at(i))
                .bearer_auth(CLIENT)
                .json(&serde_json::json!({}))
                .send()
                .await
                .unwrap()
                .status()
                == 404
            {
                assert!(Instant::now() < deadline, "instance {i} does not know py");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let hello = serde_json::json!({"protocolVersion": "2025-11-25",
            "capabilities": {"elicitation": {"form": {}}},
            "clientInfo": {"name": "asked", "version": "1"}});
        let session = clients::Streamable::open_as(http.clone(), &at(0), Some(CLIENT), hello)
            .await
            .unwrap();
        let id = session.session.clone();
        let call = serde_json::json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "confirm", "arguments": {"question": "ship it?"}}});
        let streamed = in_session(&http, &at(0), &id, CLIENT, reqwest::Method::POST)
            .json(&call)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap();
        let mut events = clients::EventReader::new(streamed);
        let asked = events
            .next_of("elicitation/create", Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("the question did not reach the client\n{}", fleet.logs()));
        assert_eq!(asked["params"]["message"], "ship it?", "{asked}");
        // The answer goes to instance 1, which did not ask.
        let answer = serde_json::json!({"jsonrpc": "2.0", "id": asked["id"],
            "result": {"action": "accept", "content": {"ok": true}}});
        let taken = in_session(&http, &at(1), &id, CLIENT, reqwest::Method::POST)
            .json(&answer)
            .send()
            .await
            .unwrap();
        assert_eq!(taken.status(), 202, "{:?}", taken.text().await);
        let done = events
            .next_where(|m| m["id"] == 7, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("the call did not finish\n{}", fleet.logs()));
        assert_eq!(clients::text(&done), "confirmed=True", "{done}");
    });
}

/// A 2026-07-28 client asked a session-era upstream's question as `input_required` on one
/// instance sends its answers with the call again; the balancer takes that to another
/// instance, which passes it to the one holding the call.
#[test]
fn a_held_call_is_resumed_through_another_instance() {
    let fleet = Fleet::start();
    let up = Upstream::start(&["--session-only"]);
    fleet.instances[0]
        .dir
        .run_expect(&["gateway", "add", "so", &format!("{}/mcp", up.base)], 0);
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert("authorization", format!("Bearer {CLIENT}").parse().unwrap());
    let http = reqwest::Client::builder()
        .default_headers(auth)
        .timeout(CALL_TIMEOUT)
        .build()
        .unwrap();
    let at = |i: usize| format!("http://{}/servers/so/mcp", fleet.instances[i].gw.addr);
    let meta = serde_json::json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}},
    });
    let args = serde_json::json!({"message": "Who are you?"});
    fleet.rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.post(at(1)).json(&serde_json::json!({})).send().await.unwrap().status() == 404 {
            assert!(Instant::now() < deadline, "instance 1 does not know so");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let call = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "test_elicitation", "arguments": args, "_meta": meta}});
        let first = clients::post_modern(&http, &at(0), &call).await;
        let result = &first["result"];
        assert_eq!(result["resultType"], "input_required", "{first}");
        let (key, _) = result["inputRequests"].as_object().unwrap().iter().next().unwrap();
        let retry = serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "test_elicitation", "arguments": args, "_meta": meta,
            "inputResponses": {key.as_str(): {"action": "accept", "content": {"username": "ada", "email": "ada@example.com"}}},
            "requestState": result["requestState"]}});
        // Sent again to instance 2, which does not hold the call.
        let done = clients::post_modern(&http, &at(2), &retry).await;
        assert_eq!(done["result"]["resultType"], "complete", "{done}\n{}", fleet.logs());
        assert!(clients::text(&done).contains("ada"), "{done}");
    });
}

/// A task started through one instance is followed through the others: `tasks/get` and
/// `tasks/result` reaching an instance whose own upstream session does not hold the task are
/// passed on to the one that started it, on `/servers/NAME/mcp` and on `/mcp`.
#[test]
fn a_task_started_on_one_instance_is_followed_through_the_others() {
    let fleet = Fleet::start();
    let http = client();
    let at = |i: usize| format!("http://{}", fleet.instances[i].gw.addr);
    for (path, tool) in [("/servers/rs/mcp", "echo"), ("/mcp", "rs__echo")] {
        let session = opened(&fleet, &http, &format!("{}{path}", at(0)));
        let id = session.session.clone();
        let call = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": tool, "arguments": {"text": "run as a task"}, "task": {"ttl": 60000}}});
        let answer = fleet.rt.block_on(session.request(&call)).unwrap();
        let task_id = answer
            .pointer("/result/task/taskId")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_else(|| panic!("no task on {path}: {answer}"))
            .to_owned();
        fleet.rt.block_on(async {
            for i in [1, 2] {
                let url = format!("{}{path}", at(i));
                let get = serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tasks/get",
                    "params": {"taskId": task_id}});
                let (status, answer) =
                    sent(&http, reqwest::Method::POST, &url, &id, Some(&get)).await;
                assert_eq!(
                    answer.pointer("/result/status"),
                    Some(&serde_json::json!("completed")),
                    "tasks/get on instance {i}{path} ({status}): {answer}\n{}",
                    fleet.logs()
                );
                let result = serde_json::json!({"jsonrpc": "2.0", "id": 3, "method": "tasks/result",
                    "params": {"taskId": task_id}});
                let (_, answer) =
                    sent(&http, reqwest::Method::POST, &url, &id, Some(&result)).await;
                assert!(
                    clients::text(&answer).contains("run as a task"),
                    "tasks/result on instance {i}{path}: {answer}"
                );
            }
            // Listed by every instance, once, whichever the balancer picks: the instance
            // asked joins the lists of those the store names for the session's tasks.
            for i in [0, 1, 2] {
                let url = format!("{}{path}", at(i));
                let list = serde_json::json!({"jsonrpc": "2.0", "id": 5, "method": "tasks/list"});
                let (status, answer) =
                    sent(&http, reqwest::Method::POST, &url, &id, Some(&list)).await;
                let listed: Vec<_> = answer
                    .pointer("/result/tasks")
                    .and_then(serde_json::Value::as_array)
                    .unwrap_or_else(|| {
                        panic!("tasks/list on instance {i}{path} ({status}): {answer}")
                    })
                    .iter()
                    .filter(|t| t["taskId"] == task_id.as_str())
                    .collect();
                assert_eq!(
                    listed.len(),
                    1,
                    "tasks/list on instance {i}{path} lists the task once: {answer}\n{}",
                    fleet.logs()
                );
            }
            // A task no instance started is still refused, by the instance asked.
            let get = serde_json::json!({"jsonrpc": "2.0", "id": 4, "method": "tasks/get",
                "params": {"taskId": "task-none"}});
            let url = format!("{}{path}", at(1));
            let (_, answer) = sent(&http, reqwest::Method::POST, &url, &id, Some(&get)).await;
            assert!(answer.get("error").is_some(), "{answer}");
        });
    }
}
