//! The handshake, in either protocol era: `server/discover` (2026-07-28) or `initialize` (the
//! session era), and what the upstream says of itself in answer.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::HeaderValue;
use serde_json::{Value, json};

use super::{
    Carrier, Connection, Era, META_SERVER_INFO, MODERN_VERSION, SESSION_VERSIONS, instructions,
};
use crate::h1::fields::{self as names, Lookup};
use crate::jsonrpc;
use crate::store::EraChoice;
use crate::upstream::UpstreamError;
use crate::upstream::raw::Received;
use crate::upstream::streamable::{self, Endpoint};

impl Connection {
    /// The handshake of a transport that speaks both eras: `server/discover` first unless
    /// `era` says the session era, `initialize` unless the upstream answered it as a
    /// 2026-07-28 server.
    pub(super) async fn greet(
        &mut self,
        era: EraChoice,
        timeout: Duration,
    ) -> Result<(), UpstreamError> {
        let modern = match era {
            EraChoice::Session => false,
            // A stdio child is one conversation for its whole life, so one era for all its
            // clients: the session era, where the server's own requests (sampling,
            // elicitation, roots) and log lines have a way back, and which the gateway bridges
            // for 2026-07-28 clients. A child that refuses `initialize` is asked
            // `server/discover`; one that ignores a method never costs a timeout here.
            EraChoice::Auto if matches!(self.carrier, super::Carrier::Stdio(_)) => {
                match self.initialize(timeout).await {
                    Ok(()) => return Ok(()),
                    Err(UpstreamError::Protocol { detail }) => {
                        if self.discover(timeout).await? {
                            return Ok(());
                        }
                        return Err(UpstreamError::Protocol { detail });
                    }
                    Err(error) => return Err(error),
                }
            }
            EraChoice::Auto => self.discover(timeout).await?,
            EraChoice::Stateless if self.discover(timeout).await? => true,
            EraChoice::Stateless => {
                return Err(UpstreamError::Protocol {
                    detail: format!(
                        "registered with --era {MODERN_VERSION}, but the upstream does not \
                         answer server/discover for it"
                    ),
                });
            }
        };
        if !modern {
            self.initialize(timeout).await?;
        }
        Ok(())
    }

    /// Try the 2026-07-28 probe. `Ok(false)`: not a modern server, fall back to initialize.
    async fn discover(&mut self, timeout: Duration) -> Result<bool, UpstreamError> {
        self.era = Era::Stateless {
            version: MODERN_VERSION.into(),
        };
        let answer = match self
            .request("server/discover", Some(json!({})), timeout)
            .await
        {
            Ok(answer) => answer,
            // A session-era server may refuse the probe at the HTTP layer (400 without a session).
            Err(UpstreamError::Status { status, .. }) if (400..500).contains(&status) => {
                self.era = Era::Session {
                    version: SESSION_VERSIONS[0].into(),
                };
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let result = answer.get("result");
        let modern = result
            .and_then(|r| r.get("supportedVersions"))
            .and_then(Value::as_array)
            .is_some_and(|v| v.iter().any(|x| x == MODERN_VERSION));
        if !modern {
            self.era = Era::Session {
                version: SESSION_VERSIONS[0].into(),
            };
            return Ok(false);
        }
        let result = result.cloned().unwrap_or_default();
        // 2026-07-28 puts serverInfo in the result's `_meta`; older drafts had it at the top.
        self.server_info = result
            .get("serverInfo")
            .or_else(|| result.get("_meta").and_then(|m| m.get(META_SERVER_INFO)))
            .cloned()
            .unwrap_or(Value::Null);
        self.capabilities = result.get("capabilities").cloned().unwrap_or(Value::Null);
        self.instructions = instructions(&result);
        Ok(true)
    }

    pub(super) async fn initialize(&mut self, timeout: Duration) -> Result<(), UpstreamError> {
        self.era = Era::Session {
            version: SESSION_VERSIONS[0].into(),
        };
        // The client's own version when mcpgw speaks it, so the upstream answers as it would
        // answer that client.
        let asked = Some(self.hello.protocol_version.as_str())
            .filter(|v| SESSION_VERSIONS.contains(v))
            .unwrap_or(SESSION_VERSIONS[0]);
        let params = json!({
            "protocolVersion": asked,
            "capabilities": self.hello.capabilities,
            "clientInfo": self.hello.client_info,
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let msg = jsonrpc::request(id, "initialize", Some(params));
        let (answer, session_id) = match &self.carrier {
            Carrier::Http(client, Endpoint { target, headers }) => {
                let sink = self.sink.clone();
                let a = streamable::post(client, target, headers, &msg, timeout, &*sink).await?;
                let sid = a.headers.text(&names::SESSION_ID).map(str::to_owned);
                (a.response.map(Received::into_value).transpose()?, sid)
            }
            Carrier::Sse(_) | Carrier::Stdio(_) => {
                (self.send_on_stream(&msg, timeout).await?, None)
            }
        };
        let answer = answer.ok_or_else(|| UpstreamError::Protocol {
            detail: "no answer to initialize".into(),
        })?;
        if let Some(err) = answer.get("error") {
            return Err(UpstreamError::Protocol {
                detail: format!("initialize was refused: {err}"),
            });
        }
        let result = answer
            .get("result")
            .cloned()
            .ok_or_else(|| UpstreamError::Protocol {
                detail: "initialize answer has no result".into(),
            })?;
        let version = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(SESSION_VERSIONS[0])
            .to_owned();
        if !SESSION_VERSIONS.contains(&version.as_str()) {
            return Err(UpstreamError::Protocol {
                detail: format!(
                    "the upstream chose protocol version {version}, which mcpgw does not speak"
                ),
            });
        }
        self.server_info = result.get("serverInfo").cloned().unwrap_or(Value::Null);
        self.capabilities = result.get("capabilities").cloned().unwrap_or(Value::Null);
        self.instructions = instructions(&result);
        self.era = Era::Session {
            version: version.clone(),
        };
        if let Carrier::Http(_, Endpoint { headers, .. }) = &mut self.carrier {
            if let Some(sid) = session_id.and_then(|s| HeaderValue::from_str(&s).ok()) {
                headers.insert(names::SESSION_ID.clone(), sid);
            }
            if let Ok(v) = HeaderValue::from_str(&version) {
                headers.insert(names::PROTOCOL_VERSION.clone(), v);
            }
        }
        self.notify("notifications/initialized", None, timeout)
            .await
    }
}
