//! `mcpgw policy check`: what the `[policy]` of a config file decides for one principal and one
//! tool, prompt or resource, and which rule decides it. It reads the file as a reload would, so
//! it answers for the policy the gateway puts in force on its next SIGHUP.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::bail;

use crate::access::policy::{By, Effect, Kind, Policy, Target};
use crate::access::{Method, Principal, Role};
use crate::cli::{PolicyCheckArgs, TokenRole, UsageError};

/// The config file asked when none is named.
const DEFAULT_CONFIG: &str = "mcpgw.toml";

/// Print the decision; an error (exit 1) when it denies.
pub fn check(args: &PolicyCheckArgs, json: bool) -> anyhow::Result<()> {
    let path = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let file = crate::config::read_file(&path)?;
    let separator = file
        .upstreams
        .separator
        .clone()
        .unwrap_or_else(|| "__".into());
    let policy = Policy::compile(file.policy, &path.display().to_string())?;
    let (kind, named) = match (&args.tool, &args.prompt, &args.resource) {
        (Some(tool), _, _) => (Kind::Tool, tool),
        (_, Some(prompt), _) => (Kind::Prompt, prompt),
        (_, _, Some(uri)) => (Kind::Resource, uri),
        // clap requires one of the three.
        _ => bail!(UsageError(
            "one of --tool, --prompt or --resource is required".into()
        )),
    };
    let (upstream, name) = match (&args.upstream, kind) {
        (Some(upstream), _) => (upstream.as_str(), named.as_str()),
        (None, Kind::Resource) => bail!(UsageError("--resource needs --upstream".into())),
        (None, _) => named.split_once(separator.as_str()).ok_or_else(|| {
            UsageError(format!(
                "'{named}' names no upstream: write <upstream>{separator}<name> or add --upstream"
            ))
        })?,
    };
    let principal = principal(args)?;
    let target = Target {
        kind,
        upstream,
        name,
    };
    let decision = policy.check(&principal, &target);
    let explained = decision.explain(&target);
    if json {
        let rule = match &decision.by {
            By::Rule { number, name } => serde_json::json!({"number": number, "name": &**name}),
            By::Scopes => serde_json::json!("scopes"),
            By::Default => serde_json::json!("default"),
        };
        super::print_json(&serde_json::json!({
            "allowed": decision.allows(), "by": rule, "explanation": explained,
            "principal": &*principal.id, "rules": policy.len(),
        }))?;
    } else {
        println!("{explained}");
    }
    if decision.effect == Effect::Deny {
        bail!(Denied);
    }
    Ok(())
}

/// The principal the flags describe.
fn principal(args: &PolicyCheckArgs) -> anyhow::Result<Principal> {
    let role = match args.role {
        TokenRole::Client => Role::Client,
        TokenRole::Admin => Role::Admin,
    };
    let mut claims = Vec::new();
    for claim in &args.claims {
        let Some((name, value)) = claim.split_once('=') else {
            bail!(UsageError(format!(
                "invalid --claim {claim:?}: expected NAME=VALUE"
            )));
        };
        claims.push((name.into(), value.into()));
    }
    let mut principal = Principal::new(args.principal.as_str(), role, Method::None)
        .with_scopes(args.scopes.iter().map(String::as_str));
    principal.claims = Arc::from(claims);
    Ok(principal)
}

/// The decision was to deny: exit 1, the explanation already printed.
#[derive(Debug, thiserror::Error)]
#[error("denied")]
pub struct Denied;
