//! Resource URIs under `/mcp`, where every online upstream's resources share one list
//! (docs/ARCHITECTURE.md, "What the gateway says about itself"):
//!
//! - a URI that one online upstream lists is listed, and read, as it is;
//! - a URI that two or more list, or one already in the gateway's scheme, is listed once per
//!   upstream as `mcpgw://<upstream>/<uri>` (the upstream's name is its registration name,
//!   which has no `/`); the bare URI is then refused, naming the choices, rather than read
//!   from whichever upstream happened to come first;
//! - `mcpgw://<upstream>/<uri>` always means `<uri>` of `<upstream>`, shared or not, so a
//!   URI a client was given stays good when another upstream comes or goes.
//!
//! Resource templates follow the same rule on their `uriTemplate`: a client that fills a
//! rewritten template gets a URI in the gateway's scheme. `/servers/{name}/mcp` passes URIs as
//! the upstream gives them. A session that subscribed through a URI in the gateway's scheme
//! hears of its updates under that URI ([`SubscribedAs`]).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::dispatch::in_scope;
use super::{AppState, Scope};
use crate::session::SessionKey;
use crate::upstream::registry::{Entry, Upstream};

/// The scheme of the gateway's own resource URIs.
const SCHEME: &str = "mcpgw://";

/// `uri` of `upstream` in the gateway's scheme.
pub(super) fn gateway_uri(upstream: &str, uri: &str) -> String {
    format!("{SCHEME}{upstream}/{uri}")
}

/// The upstream and its own URI, for a URI in the gateway's scheme.
fn split(uri: &str) -> Option<(&str, &str)> {
    uri.strip_prefix(SCHEME)?.split_once('/')
}

/// The URIs (or templates) under `field` that the listing of `/mcp` must rewrite: those two
/// or more upstreams of `ups` list, and those already in the gateway's scheme.
pub(super) fn shared<'c>(
    catalogs: impl Iterator<Item = &'c Vec<Value>>,
    field: &str,
) -> std::collections::HashSet<String> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for items in catalogs {
        // An upstream that lists a URI twice does not share it with itself.
        let mut own: Vec<&str> = items
            .iter()
            .filter_map(|item| item.get(field).and_then(Value::as_str))
            .collect();
        own.sort_unstable();
        own.dedup();
        for uri in own {
            *seen.entry(uri).or_default() += 1;
        }
    }
    seen.into_iter()
        .filter(|(uri, n)| *n > 1 || uri.starts_with(SCHEME))
        .map(|(uri, _)| uri.to_owned())
        .collect()
}

/// The upstream that serves `uri` in `scope`, and the URI it knows it by.
pub(super) fn owner(
    state: &AppState,
    scope: &Scope,
    uri: &str,
) -> Result<(Arc<Upstream>, String), String> {
    let candidates = in_scope(state, scope);
    if matches!(scope, Scope::All)
        && let Some((name, own)) = split(uri)
    {
        return candidates
            .into_iter()
            .find(|up| up.name() == name)
            .map(|up| (up, own.to_owned()))
            .ok_or_else(|| format!("no online upstream named '{name}' (resource '{uri}')"));
    }
    let which = |matches: &dyn Fn(&Upstream) -> bool| -> Vec<&Arc<Upstream>> {
        candidates.iter().filter(|up| matches(up)).collect()
    };
    let lists = |up: &Upstream, field: &str, what: &dyn Fn(&str) -> bool| {
        let catalog = up.catalog();
        let items = match field {
            "uri" => &catalog.resources,
            _ => &catalog.resource_templates,
        };
        items.iter().filter_map(Entry::key).any(what)
    };
    let mut owners = which(&|up| lists(up, "uri", &|listed| listed == uri));
    if owners.is_empty() {
        // A template itself (a completion's reference), then a URI made from one: matched by
        // the template's literal prefix.
        owners = which(&|up| lists(up, "uriTemplate", &|tpl| tpl == uri));
    }
    if owners.is_empty() {
        owners = which(&|up| {
            lists(up, "uriTemplate", &|tpl| {
                tpl.split('{')
                    .next()
                    .is_some_and(|prefix| !prefix.is_empty() && uri.starts_with(prefix))
            })
        });
    }
    if owners.is_empty() && candidates.len() == 1 {
        // One upstream in scope: it is asked, whatever its catalog says.
        owners = candidates.iter().collect();
    }
    match owners.as_slice() {
        [one] => Ok((Arc::clone(one), uri.to_owned())),
        [] => Err(format!("no online upstream offers resource '{uri}'")),
        many => {
            let choices: Vec<String> = many.iter().map(|up| gateway_uri(&up.name(), uri)).collect();
            Err(format!(
                "resource '{uri}' is offered by {} upstreams; name one: {}",
                many.len(),
                choices.join(", ")
            ))
        }
    }
}

/// The resource subscriptions sessions made through a URI in the gateway's scheme, as
/// (session, upstream, the upstream's own URI): the upstream names its updates by its own URI,
/// and they reach such a session under the URI it subscribed by.
#[derive(Debug, Default)]
pub struct SubscribedAs(Mutex<HashSet<(SessionKey, String, String)>>);

impl SubscribedAs {
    fn table(&self) -> std::sync::MutexGuard<'_, HashSet<(SessionKey, String, String)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `session` subscribed to `own` of `upstream` (`by_gateway`: through the gateway's
    /// scheme), or unsubscribed (`subscribed` false).
    pub(super) fn record(
        &self,
        session: &SessionKey,
        upstream: &str,
        own: &str,
        subscribed: bool,
        by_gateway: bool,
    ) {
        let key = (session.clone(), upstream.to_owned(), own.to_owned());
        if subscribed && by_gateway {
            self.table().insert(key);
        } else {
            self.table().remove(&key);
        }
    }

    /// Keep only the sessions `keep` says are still there.
    pub fn retain(&self, keep: impl Fn(&SessionKey) -> bool) {
        self.table().retain(|(session, _, _)| keep(session));
    }

    /// `upstream`'s `notifications/resources/updated`, named for `session` (any other message
    /// as it is).
    pub fn named_for<'m>(
        &self,
        session: &SessionKey,
        upstream: &str,
        msg: &'m Value,
    ) -> Cow<'m, Value> {
        let own = msg.pointer("/params/uri").and_then(Value::as_str);
        let updated = crate::jsonrpc::method(msg) == Some("notifications/resources/updated");
        let Some(own) = own.filter(|_| updated) else {
            return Cow::Borrowed(msg);
        };
        let key = (session.clone(), upstream.to_owned(), own.to_owned());
        if !self.table().contains(&key) {
            return Cow::Borrowed(msg);
        }
        let mut named = msg.clone();
        named["params"]["uri"] = Value::String(gateway_uri(upstream, own));
        Cow::Owned(named)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_uri_two_upstreams_list_is_shared_and_one_upstreams_is_not() {
        let a = vec![
            json!({"uri": "fixture://info"}),
            json!({"uri": "a://only"}),
            json!({"uri": "a://only"}),
        ];
        let b = vec![
            json!({"uri": "fixture://info"}),
            json!({"uri": "mcpgw://x/y://z"}),
        ];
        let shared = shared([&a, &b].into_iter(), "uri");
        let mut got: Vec<&str> = shared.iter().map(String::as_str).collect();
        got.sort_unstable();
        assert_eq!(got, ["fixture://info", "mcpgw://x/y://z"]);
    }

    #[test]
    fn updates_are_named_as_the_session_subscribed() {
        let table = SubscribedAs::default();
        let (s1, s2) = (SessionKey::Ws(1), SessionKey::Ws(2));
        table.record(&s1, "b", "fixture://info", true, true);
        table.record(&s2, "b", "fixture://info", true, false);
        let update = json!({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": "fixture://info"}});
        let named =
            |s: &SessionKey, up: &str| table.named_for(s, up, &update)["params"]["uri"].clone();
        assert_eq!(named(&s1, "b"), "mcpgw://b/fixture://info");
        assert_eq!(named(&s2, "b"), "fixture://info");
        assert_eq!(named(&s1, "a"), "fixture://info");
        table.record(&s1, "b", "fixture://info", false, true);
        assert_eq!(named(&s1, "b"), "fixture://info");
        table.record(&s2, "b", "x://y", true, true);
        table.retain(|s| *s != s2);
        assert!(table.table().is_empty());
    }

    #[test]
    fn the_gateway_scheme_names_the_upstream_and_its_own_uri() {
        let uri = gateway_uri("up-1", "fixture://info?x=1#f");
        assert_eq!(uri, "mcpgw://up-1/fixture://info?x=1#f");
        assert_eq!(split(&uri), Some(("up-1", "fixture://info?x=1#f")));
        assert_eq!(
            split("mcpgw://b/mcpgw://a/u://v"),
            Some(("b", "mcpgw://a/u://v"))
        );
        assert_eq!(split("fixture://info"), None);
    }
}
