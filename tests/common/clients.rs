//! MCP clients for tests, one per downstream transport, each holding one session open.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The `_meta` envelope of a 2026-07-28 request (no client capabilities).
pub fn modern_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

/// POST a 2026-07-28 request with its routing headers (no session); the answer, from a JSON
/// body or as the last answer of an event stream.
pub async fn post_modern(http: &reqwest::Client, url: &str, msg: &Value) -> Value {
    let mut req = http
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", msg["method"].as_str().unwrap_or_default());
    if let Some(name) = msg["params"]["name"].as_str() {
        req = req.header("mcp-name", name);
    }
    let resp = req.json(msg).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{msg}");
    let is_stream = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
    let text = resp.text().await.unwrap();
    if !is_stream {
        return serde_json::from_str(&text).unwrap();
    }
    let answer = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .rfind(|m| m.get("id").is_some() && m.get("method").is_none());
    answer.unwrap_or_else(|| panic!("no answer in the stream: {text}"))
}

/// One 2026-07-28 `tools/call` of `rs__echo` with `text`, with `bearer` if given; `Err` says
/// what went wrong (a client timeout starts with "timed out").
pub async fn echo_modern(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    text: &str,
) -> Result<(), String> {
    let msg = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "rs__echo", "arguments": {"text": text}, "_meta": modern_meta()}});
    let mut request = http
        .post(url)
        .header("accept", "application/json")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "rs__echo")
        .json(&msg);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let failed = |e: reqwest::Error| {
        if e.is_timeout() {
            format!("timed out: {e:?}")
        } else {
            format!("{e:?}")
        }
    };
    let resp = request.send().await.map_err(failed)?;
    let status = resp.status();
    let body = resp.text().await.map_err(failed)?;
    let answer: Value = serde_json::from_str(&body).map_err(|e| format!("{status} {body}: {e}"))?;
    if answer["result"]["content"][0]["text"].as_str() == Some(text) {
        Ok(())
    } else {
        Err(format!("{status} {answer}"))
    }
}

/// A 2026-07-28 `subscriptions/listen` request with id `id` asking for `filter`.
pub fn listen_request(id: &str, filter: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "subscriptions/listen", "params": {
        "notifications": filter,
        "_meta": modern_meta(),
    }})
}

/// POST [`listen_request`] to `url` with its routing headers, `accept` as given.
pub async fn listen(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    (id, filter): (&str, Value),
    accept: &str,
) -> reqwest::Response {
    let mut request = http
        .post(url)
        .header("accept", accept)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "subscriptions/listen")
        .timeout(Duration::from_secs(60))
        .json(&listen_request(id, filter));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// An HTTP client trusting `ca` (if any), with an optional bearer token.
pub fn http(ca: Option<&Path>) -> reqwest::Client {
    super::tls::install_provider();
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if let Some(ca) = ca {
        let mut roots = rustls::RootCertStore::empty();
        for c in mcpgw::tls::pem::certs_from_file(ca).unwrap() {
            roots.add(c).unwrap();
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        builder = builder.tls_backend_preconfigured(config);
    }
    builder.build().unwrap()
}

fn call(id: Value, tool: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}})
}

/// A Streamable-HTTP session.
pub struct Streamable {
    http: reqwest::Client,
    url: String,
    bearer: Option<String>,
    /// The session id from initialize.
    pub session: String,
}

impl Streamable {
    /// `initialize` + `notifications/initialized`.
    pub async fn open(
        http: reqwest::Client,
        url: &str,
        bearer: Option<&str>,
    ) -> anyhow::Result<Self> {
        let hello = json!({"protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"}});
        Self::open_as(http, url, bearer, hello).await
    }

    /// [`Self::open`] with these `initialize` params.
    pub async fn open_as(
        http: reqwest::Client,
        url: &str,
        bearer: Option<&str>,
        hello: Value,
    ) -> anyhow::Result<Self> {
        let mut this = Self {
            http,
            url: url.to_owned(),
            bearer: bearer.map(str::to_owned),
            session: String::new(),
        };
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": hello});
        let resp = this.post(&init).await?;
        this.session = resp
            .headers()
            .get("mcp-session-id")
            .ok_or_else(|| anyhow::anyhow!("no session id"))?
            .to_str()?
            .to_owned();
        this.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await?;
        Ok(this)
    }

    async fn post(&self, body: &Value) -> anyhow::Result<reqwest::Response> {
        let mut req = self
            .http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .json(body);
        if !self.session.is_empty() {
            req = req
                .header("mcp-session-id", &self.session)
                .header("mcp-protocol-version", "2025-11-25");
        }
        if let Some(b) = &self.bearer {
            req = req.bearer_auth(b);
        }
        Ok(req.send().await?)
    }

    /// Send one request; the JSON answer.
    pub async fn request(&self, msg: &Value) -> anyhow::Result<Value> {
        let resp = self.post(msg).await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        anyhow::ensure!(status.is_success(), "HTTP {status}: {body}");
        Ok(body)
    }

    /// `tools/call`.
    pub async fn call(&self, id: Value, tool: &str, args: Value) -> anyhow::Result<Value> {
        self.request(&call(id, tool, args)).await
    }

    /// End the session (`DELETE`); the status.
    pub async fn close(&self) -> anyhow::Result<reqwest::StatusCode> {
        let mut req = self
            .http
            .delete(&self.url)
            .header("mcp-session-id", &self.session);
        if let Some(b) = &self.bearer {
            req = req.bearer_auth(b);
        }
        Ok(req.send().await?.status())
    }
}

/// A legacy HTTP+SSE session.
pub struct SseSession {
    http: reqwest::Client,
    endpoint: String,
    bearer: Option<String>,
    events: mpsc::UnboundedReceiver<Value>,
    _reader: tokio::task::JoinHandle<()>,
    /// Where the stream was opened (`base`, `path`), to open it again.
    base: String,
    path: String,
    /// The id of the last event read, as an EventSource keeps it.
    last_id: Arc<std::sync::Mutex<Option<String>>>,
}

impl SseSession {
    /// GET the stream and wait for `endpoint`.
    pub async fn open(
        http: reqwest::Client,
        base: &str,
        path: &str,
        bearer: Option<&str>,
    ) -> anyhow::Result<Self> {
        let last_id = Arc::new(std::sync::Mutex::new(None));
        let (endpoint, events, reader) =
            Self::connect(&http, base, path, bearer, last_id.clone()).await?;
        Ok(Self {
            http,
            endpoint,
            bearer: bearer.map(str::to_owned),
            events,
            _reader: reader,
            base: base.to_owned(),
            path: path.to_owned(),
            last_id,
        })
    }

    /// Open the stream again as an EventSource does after losing it: with the last event id
    /// it read as `Last-Event-ID`; the session's new endpoint replaces the old.
    pub async fn reopen(&mut self) -> anyhow::Result<()> {
        self._reader.abort();
        let (endpoint, events, reader) = Self::connect(
            &self.http,
            &self.base,
            &self.path,
            self.bearer.as_deref(),
            self.last_id.clone(),
        )
        .await?;
        self.endpoint = endpoint;
        self.events = events;
        self._reader = reader;
        Ok(())
    }

    async fn connect(
        http: &reqwest::Client,
        base: &str,
        path: &str,
        bearer: Option<&str>,
        last_id: Arc<std::sync::Mutex<Option<String>>>,
    ) -> anyhow::Result<(
        String,
        mpsc::UnboundedReceiver<Value>,
        tokio::task::JoinHandle<()>,
    )> {
        let mut req = http
            .get(format!("{base}{path}"))
            .header("accept", "text/event-stream");
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        if let Some(id) = last_id.lock().unwrap().clone() {
            req = req.header("last-event-id", id);
        }
        let resp = req.timeout(Duration::from_secs(3600)).send().await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "GET {path}: HTTP {}",
            resp.status()
        );
        let mut stream = resp.bytes_stream();
        let (endpoint_tx, endpoint_rx) = tokio::sync::oneshot::channel();
        let (tx, events) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let mut buf = String::new();
            let mut endpoint_tx = Some(endpoint_tx);
            while let Some(Ok(chunk)) = stream.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let frame: String = buf.drain(..end + 2).collect();
                    let mut event = "message";
                    let mut data = String::new();
                    for line in frame.lines() {
                        if let Some(e) = line.strip_prefix("event:") {
                            event = if e.trim() == "endpoint" {
                                "endpoint"
                            } else {
                                "message"
                            };
                        } else if let Some(d) = line.strip_prefix("data:") {
                            data.push_str(d.trim_start());
                        } else if let Some(id) = line.strip_prefix("id:") {
                            *last_id.lock().unwrap() = Some(id.trim().to_owned());
                        }
                    }
                    if event == "endpoint" {
                        if let Some(tx) = endpoint_tx.take() {
                            let _ = tx.send(data);
                        }
                    } else if let Ok(v) = serde_json::from_str::<Value>(&data) {
                        let _ = tx.send(v);
                    }
                }
            }
        });
        let endpoint = tokio::time::timeout(Duration::from_secs(10), endpoint_rx).await??;
        Ok((format!("{base}{endpoint}"), events, reader))
    }

    /// The URL its messages are posted to (`…/message?session_id=…`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// POST one message without waiting for anything on the stream.
    pub async fn send(&self, msg: &Value) -> anyhow::Result<()> {
        let mut req = self.http.post(&self.endpoint).json(msg);
        if let Some(b) = &self.bearer {
            req = req.bearer_auth(b);
        }
        let status = req.send().await?.status();
        anyhow::ensure!(status.as_u16() == 202, "POST message: HTTP {status}");
        Ok(())
    }

    /// POST one request and wait for its answer on the stream.
    pub async fn request(&mut self, msg: &Value) -> anyhow::Result<Value> {
        self.send(msg).await?;
        let answer = tokio::time::timeout(Duration::from_secs(30), self.events.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("SSE stream closed"))?;
        Ok(answer)
    }

    /// `tools/call`.
    pub async fn call(&mut self, id: Value, tool: &str, args: Value) -> anyhow::Result<Value> {
        self.request(&call(id, tool, args)).await
    }

    /// The next message on the stream, whatever it is, within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Value> {
        tokio::time::timeout(wait, self.events.recv()).await.ok()?
    }

    /// The next message on the stream with `method` within `wait` (others are skipped).
    pub async fn next_of(&mut self, method: &str, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .ok()??;
            if msg["method"] == method {
                return Some(msg);
            }
        }
    }
}

impl Drop for SseSession {
    /// Hangs up: the reader owns the stream's response.
    fn drop(&mut self) {
        self._reader.abort();
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A WebSocket over plain HTTP (loopback gateways without TLS).
pub type PlainWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connect to `ws://ADDR/ws` (subprotocol `mcp`) as `bearer`.
pub async fn ws_plain(addr: std::net::SocketAddr, bearer: &str) -> PlainWs {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert("sec-websocket-protocol", "mcp".parse().unwrap());
    headers.insert("authorization", format!("Bearer {bearer}").parse().unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// Send `msg` on `ws` and wait (30 s at most) for the text frame that answers its id; other
/// frames are skipped.
pub async fn ws_request(ws: &mut PlainWs, msg: &Value) -> Value {
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::Text(msg.to_string().into()))
        .await
        .unwrap();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(text) = frame {
            let answer: Value = serde_json::from_str(&text).unwrap();
            if answer["id"] == msg["id"] {
                return answer;
            }
        }
    }
}

/// A WebSocket session over TLS.
pub struct WsSession {
    ws: Ws,
}

impl WsSession {
    /// Connect to `wss://localhost:PORT/ws` trusting `ca`.
    pub async fn open(
        addr: std::net::SocketAddr,
        ca: &Path,
        bearer: Option<&str>,
    ) -> anyhow::Result<Self> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let config = super::tls::client_config(ca);
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(rustls::pki_types::ServerName::try_from("localhost")?, tcp)
            .await?;
        let mut request = format!("wss://localhost:{}/ws", addr.port()).into_client_request()?;
        request
            .headers_mut()
            .insert("sec-websocket-protocol", "mcp".parse()?);
        if let Some(b) = bearer {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {b}").parse()?);
        }
        let (ws, _) = tokio_tungstenite::client_async(request, tls).await?;
        Ok(Self { ws })
    }

    /// Send one message (a notification: nothing waited for).
    pub async fn send(&mut self, msg: &Value) -> anyhow::Result<()> {
        use tokio_tungstenite::tungstenite::Message;
        Ok(self.ws.send(Message::Text(msg.to_string().into())).await?)
    }

    /// Send one request and wait for the frame that answers it (skipping pings).
    pub async fn request(&mut self, msg: &Value) -> anyhow::Result<Value> {
        use tokio_tungstenite::tungstenite::Message;
        self.ws.send(Message::Text(msg.to_string().into())).await?;
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await?
                .ok_or_else(|| anyhow::anyhow!("WebSocket closed"))??;
            if let Message::Text(text) = frame {
                return Ok(serde_json::from_str(&text)?);
            }
        }
    }

    /// `tools/call`.
    pub async fn call(&mut self, id: Value, tool: &str, args: Value) -> anyhow::Result<Value> {
        self.request(&call(id, tool, args)).await
    }

    /// The next text frame with `method` within `wait` (others are skipped).
    pub async fn next_of(&mut self, method: &str, wait: Duration) -> Option<Value> {
        self.next_where(|m| m["method"] == method, wait).await
    }

    /// The next text frame `pick` takes within `wait` (others are skipped).
    pub async fn next_where(
        &mut self,
        pick: impl Fn(&Value) -> bool,
        wait: Duration,
    ) -> Option<Value> {
        use tokio_tungstenite::tungstenite::Message;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??
                .ok()?;
            if let Message::Text(text) = frame
                && let Ok(msg) = serde_json::from_str::<Value>(&text)
                && pick(&msg)
            {
                return Some(msg);
            }
        }
    }
}

/// The first text content of a tools/call answer.
pub fn text(answer: &Value) -> String {
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {answer}"))
        .to_owned()
}

/// The events of a `GET /mcp` stream, read as they come.
pub struct EventReader {
    stream: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>>>>,
    buf: String,
}

impl EventReader {
    pub fn new(resp: reqwest::Response) -> Self {
        assert_eq!(resp.status().as_u16(), 200);
        Self {
            stream: Box::pin(resp.bytes_stream()),
            buf: String::new(),
        }
    }

    /// The next message with `method` within `wait` (others are skipped), or `None`.
    pub async fn next_of(&mut self, method: &str, wait: Duration) -> Option<Value> {
        self.next_where(|m| m["method"] == method, wait).await
    }

    /// The next message, whatever it is, within `wait`, or `None`.
    pub async fn next(&mut self, wait: Duration) -> Option<Value> {
        self.next_where(|_| true, wait).await
    }

    /// The next message `pick` takes within `wait` (others are skipped), or `None`.
    pub async fn next_where(
        &mut self,
        pick: impl Fn(&Value) -> bool,
        wait: Duration,
    ) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let data = frame
                    .lines()
                    .find_map(|l| l.strip_prefix("data:"))
                    .map(|v| serde_json::from_str::<Value>(v.trim()).unwrap());
                if let Some(data) = data
                    && pick(&data)
                {
                    return Some(data);
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()??
                .unwrap();
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// A session-era client on the legacy SSE endpoint `path`: it initializes declaring form
/// elicitation, calls `confirm` with `question`, answers the question the call brings (`ok`);
/// the call's answer.
pub async fn confirm_over_sse(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    question: &str,
    ok: bool,
) -> Value {
    let mut sse = SseSession::open(http.clone(), base, path, None)
        .await
        .unwrap();
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {"elicitation": {"form": {}}},
        "clientInfo": {"name": "old-client", "version": "1"}}});
    sse.request(&init).await.unwrap();
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "confirm", "arguments": {"question": question}}});
    sse.send(&call).await.unwrap();
    let asked = sse
        .next_of("elicitation/create", Duration::from_secs(20))
        .await
        .expect("the upstream's question must reach the client as a request");
    assert_eq!(asked["params"]["message"], question, "{asked}");
    let answer = json!({"jsonrpc": "2.0", "id": asked["id"],
        "result": {"action": "accept", "content": {"ok": ok}}});
    sse.send(&answer).await.unwrap();
    loop {
        let msg = sse
            .next(Duration::from_secs(20))
            .await
            .expect("the call's answer");
        if msg["id"] == 7 {
            return msg;
        }
    }
}
