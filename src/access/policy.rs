//! Policy: which principal may use which upstream, tool, prompt and resource. Rules come from
//! `[policy]` of `mcpgw.toml`, are checked in order, and the first whose subject and object
//! both match decides; when none does, `default` does (allow unless set). A rule with no
//! subject fields is everyone's; one with no `tools`/`prompts`/`resources` covers everything
//! on its `upstreams` (all of them when that is empty too).
//!
//! ```toml
//! [policy]
//! default = "allow"
//! [[policy.rule]]
//! name = "clients-never-delete"
//! effect = "deny"
//! roles = ["client"]
//! tools = ["delete_*", "drop_*"]
//! [[policy.rule]]
//! name = "ci-reads-only-docs"
//! effect = "deny"
//! principals = ["token:ci"]
//! upstreams = ["*"]
//! resources = ["*"]
//! ```
//!
//! A principal's own scopes can narrow it further: scopes `upstream:<glob>` and
//! `tool:<upstream-glob>/<tool-glob>` (from `token create --scope`, or an access token) limit
//! it to what they name, before any rule is asked.
//!
//! Cost: what applies to a principal (the rules whose subject it matches) is worked out once
//! per principal and policy, and each decision it gets is remembered, so a call pays a lookup,
//! not a scan of the rules; a policy with no rules costs a branch.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use super::glob::Glob;
use super::{Principal, Role};
use crate::hash::HashMap;

/// Decisions remembered per principal; past it they are forgotten and made again.
const MAX_DECISIONS: usize = 4096;
/// Principals whose view is remembered; past it all are forgotten.
const MAX_VIEWS: usize = 4096;

/// `[policy]` of `mcpgw.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePolicy {
    /// `allow` or `deny`: what happens when no rule matches.
    default: Option<String>,
    /// The rules, in order.
    #[serde(default, rename = "rule")]
    rules: Vec<FileRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    name: Option<String>,
    effect: String,
    #[serde(default)]
    principals: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    claims: BTreeMap<String, String>,
    #[serde(default)]
    upstreams: Vec<String>,
    tools: Option<Vec<String>>,
    prompts: Option<Vec<String>>,
    resources: Option<Vec<String>>,
}

/// Why a policy cannot be used (the one in force stays).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A field has a value that means nothing.
    #[error("{origin}: [[policy.rule]] {rule}: {field}: expected {expected}, got {got:?}")]
    Field {
        /// The file.
        origin: String,
        /// The rule's name, or its position.
        rule: String,
        /// The field.
        field: &'static str,
        /// What would have been accepted.
        expected: &'static str,
        /// What was there.
        got: String,
    },
    /// `default` is neither `allow` nor `deny`.
    #[error("{origin}: policy.default: expected \"allow\" or \"deny\", got {got:?}")]
    Default {
        /// The file.
        origin: String,
        /// What was there.
        got: String,
    },
    /// The file could not be read or is not TOML of the expected shape.
    #[error("{origin}: {detail}")]
    File {
        /// The file.
        origin: String,
        /// What was wrong.
        detail: String,
    },
}

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Let it through.
    Allow,
    /// Refuse it (a call) or leave it out (a list).
    Deny,
}

/// What kind of thing a request reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A tool (`tools/call`, `tools/list`).
    Tool,
    /// A prompt (`prompts/get`, `prompts/list`, completion of its arguments).
    Prompt,
    /// A resource or resource template, by URI.
    Resource,
}

impl Kind {
    /// Its name in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tool => "tool",
            Self::Prompt => "prompt",
            Self::Resource => "resource",
        }
    }
}

/// One thing a principal wants: a tool, prompt or resource of an upstream, by the upstream's
/// own name for it (not the `/mcp` prefixed one).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Its kind.
    pub kind: Kind,
    /// The upstream it belongs to.
    pub upstream: &'a str,
    /// The tool or prompt name, or the resource URI.
    pub name: &'a str,
}

/// What decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum By {
    /// The rule at this position (from 1) with this name.
    Rule {
        /// Its position, from 1.
        number: usize,
        /// Its name (or `#<number>`).
        name: Arc<str>,
    },
    /// The principal's own `upstream:`/`tool:` scopes, which do not name it.
    Scopes,
    /// No rule matched.
    Default,
}

/// A decision and what made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allow or deny.
    pub effect: Effect,
    /// Why.
    pub by: By,
}

impl Decision {
    /// Whether it lets the request through.
    pub fn allows(&self) -> bool {
        self.effect == Effect::Allow
    }

    /// The decision in words: what the refusal of a call says, and `policy check` prints.
    pub fn explain(&self, target: &Target<'_>) -> String {
        let verb = match self.effect {
            Effect::Allow => "allowed",
            Effect::Deny => "denied",
        };
        let what = format!(
            "{} '{}' of upstream '{}'",
            target.kind.as_str(),
            target.name,
            target.upstream
        );
        match &self.by {
            By::Rule { number, name } => format!("{what} {verb} by policy rule {name} (#{number})"),
            By::Scopes => format!("{what} {verb}: the token's scopes do not include it"),
            By::Default => format!("{what} {verb} by the policy default (no rule matched)"),
        }
    }
}

#[derive(Debug)]
struct Rule {
    name: Arc<str>,
    effect: Effect,
    principals: Vec<Glob>,
    roles: Vec<Role>,
    scopes: Vec<Glob>,
    claims: Vec<(Box<str>, Glob)>,
    upstreams: Vec<Glob>,
    tools: Option<Vec<Glob>>,
    prompts: Option<Vec<Glob>>,
    resources: Option<Vec<Glob>>,
}

fn any(patterns: &[Glob], text: &str) -> bool {
    patterns.iter().any(|p| p.matches(text))
}

impl Rule {
    /// Whether `principal` is one the rule speaks of (every field given must match).
    fn covers(&self, principal: &Principal) -> bool {
        (self.principals.is_empty() || any(&self.principals, &principal.id))
            && (self.roles.is_empty() || self.roles.contains(&principal.role))
            && (self.scopes.is_empty() || principal.scopes.iter().any(|s| any(&self.scopes, s)))
            && self.claims.iter().all(|(claim, pattern)| {
                principal
                    .claims
                    .iter()
                    .any(|(name, value)| name == claim && pattern.matches(value))
            })
    }

    /// Whether `target` is one the rule speaks of.
    fn reaches(&self, target: &Target<'_>) -> bool {
        if !self.upstreams.is_empty() && !any(&self.upstreams, target.upstream) {
            return false;
        }
        let named = [&self.tools, &self.prompts, &self.resources];
        if named.iter().all(|n| n.is_none()) {
            return true;
        }
        let patterns = match target.kind {
            Kind::Tool => &self.tools,
            Kind::Prompt => &self.prompts,
            Kind::Resource => &self.resources,
        };
        patterns.as_ref().is_some_and(|p| any(p, target.name))
    }
}

/// A compiled policy: what the pipeline asks, and what `policy check` explains.
#[derive(Debug, Default)]
pub struct Policy {
    rules: Vec<Rule>,
    default: Option<Effect>,
    /// What applies to each principal seen, by id.
    views: Mutex<HashMap<Arc<str>, Arc<View>>>,
}

/// What of the policy applies to one principal, and the decisions it has had.
#[derive(Debug)]
struct View {
    /// The principal it was made for (an id can come back with other scopes or claims).
    principal: Principal,
    /// Positions of the rules whose subject it matches, in order.
    rules: Vec<usize>,
    /// Its `upstream:`/`tool:` scopes, when it has any.
    limits: Option<Limits>,
    decisions: Mutex<HashMap<u64, Remembered>>,
}

/// A decision and the target it was for (the key is only a hash of it).
#[derive(Debug)]
struct Remembered {
    kind: Kind,
    upstream: Box<str>,
    name: Box<str>,
    decision: Decision,
}

/// What a principal's own scopes let it reach.
#[derive(Debug)]
struct Limits {
    upstreams: Vec<Glob>,
    tools: Vec<(Glob, Glob)>,
}

impl Limits {
    fn of(principal: &Principal) -> Option<Self> {
        let mut limits = Self {
            upstreams: Vec::new(),
            tools: Vec::new(),
        };
        for scope in principal.scopes.iter() {
            if let Some(upstream) = scope.strip_prefix("upstream:") {
                limits.upstreams.push(Glob::new(upstream));
            } else if let Some(tool) = scope.strip_prefix("tool:") {
                let (upstream, name) = tool.split_once('/').unwrap_or((tool, "*"));
                limits.tools.push((Glob::new(upstream), Glob::new(name)));
            }
        }
        (!limits.upstreams.is_empty() || !limits.tools.is_empty()).then_some(limits)
    }

    fn admit(&self, target: &Target<'_>) -> bool {
        any(&self.upstreams, target.upstream)
            || (target.kind == Kind::Tool
                && self
                    .tools
                    .iter()
                    .any(|(u, t)| u.matches(target.upstream) && t.matches(target.name)))
    }
}

fn has_limits(principal: &Principal) -> bool {
    principal
        .scopes
        .iter()
        .any(|s| s.starts_with("upstream:") || s.starts_with("tool:"))
}

impl Policy {
    /// The policy of `file`; `origin` names the file in errors.
    pub fn compile(file: FilePolicy, origin: &str) -> Result<Self, PolicyError> {
        let default = match file.default.as_deref() {
            None => None,
            Some("allow") => Some(Effect::Allow),
            Some("deny") => Some(Effect::Deny),
            Some(other) => {
                return Err(PolicyError::Default {
                    origin: origin.to_owned(),
                    got: other.to_owned(),
                });
            }
        };
        let mut rules = Vec::with_capacity(file.rules.len());
        for (at, rule) in file.rules.into_iter().enumerate() {
            let label = rule.name.clone().unwrap_or_else(|| format!("#{}", at + 1));
            let field = |field, expected, got: &str| PolicyError::Field {
                origin: origin.to_owned(),
                rule: label.clone(),
                field,
                expected,
                got: got.to_owned(),
            };
            let effect = match rule.effect.as_str() {
                "allow" => Effect::Allow,
                "deny" => Effect::Deny,
                other => return Err(field("effect", "\"allow\" or \"deny\"", other)),
            };
            let mut roles = Vec::new();
            for role in &rule.roles {
                roles.push(
                    Role::parse(role).ok_or_else(|| field("roles", "admin or client", role))?,
                );
            }
            let globs = |patterns: &[String], name, what| -> Result<Vec<Glob>, PolicyError> {
                match patterns.iter().find(|p| p.is_empty()) {
                    Some(empty) => Err(field(name, what, empty)),
                    None => Ok(patterns.iter().map(|p| Glob::new(p)).collect()),
                }
            };
            let named = |patterns: &Option<Vec<String>>, name| {
                patterns
                    .as_deref()
                    .map(|p| globs(p, name, "non-empty patterns"))
                    .transpose()
            };
            rules.push(Rule {
                name: label.as_str().into(),
                effect,
                principals: globs(&rule.principals, "principals", "non-empty patterns")?,
                roles,
                scopes: globs(&rule.scopes, "scopes", "non-empty patterns")?,
                claims: rule
                    .claims
                    .iter()
                    .map(|(k, v)| (k.as_str().into(), Glob::new(v)))
                    .collect(),
                upstreams: globs(&rule.upstreams, "upstreams", "non-empty patterns")?,
                tools: named(&rule.tools, "tools")?,
                prompts: named(&rule.prompts, "prompts")?,
                resources: named(&rule.resources, "resources")?,
            });
        }
        Ok(Self {
            rules,
            default,
            views: Mutex::default(),
        })
    }

    /// The `[policy]` of the TOML file at `path` (its other tables are not looked at); an empty
    /// policy when it has none.
    pub fn load(path: &std::path::Path) -> Result<Self, PolicyError> {
        #[derive(Deserialize)]
        struct Only {
            #[serde(default)]
            policy: FilePolicy,
        }
        let origin = path.display().to_string();
        let file = |detail: String| PolicyError::File {
            origin: origin.clone(),
            detail,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file(e.to_string()))?;
        let only: Only = toml::from_str(&text).map_err(|e| file(e.message().to_owned()))?;
        Self::compile(only.policy, &origin)
    }

    /// How many rules it has.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether it has no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether `principal` may reach everything: no rule, an allowing default, and no scopes
    /// of its own narrowing it. What a call asks first, before it names its target.
    pub fn lets_everything(&self, principal: &Principal) -> bool {
        self.rules.is_empty() && self.default != Some(Effect::Deny) && !has_limits(principal)
    }

    /// May `principal` reach `target`?
    pub fn check(&self, principal: &Principal, target: &Target<'_>) -> Decision {
        // Nothing to ask: no rule, the default, and no scopes narrowing the principal.
        if self.rules.is_empty() && !has_limits(principal) {
            return self.by_default();
        }
        let view = self.view(principal);
        let key = foldhash::fast::FixedState::default().hash_one((
            target.kind,
            target.upstream,
            target.name,
        ));
        let mut decisions = view.decisions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(seen) = decisions.get(&key)
            && seen.kind == target.kind
            && *seen.upstream == *target.upstream
            && *seen.name == *target.name
        {
            return seen.decision.clone();
        }
        let decision = self.decide(&view, target);
        if decisions.len() >= MAX_DECISIONS {
            decisions.clear();
        }
        let seen = Remembered {
            kind: target.kind,
            upstream: target.upstream.into(),
            name: target.name.into(),
            decision: decision.clone(),
        };
        decisions.insert(key, seen);
        decision
    }

    fn by_default(&self) -> Decision {
        Decision {
            effect: self.default.unwrap_or(Effect::Allow),
            by: By::Default,
        }
    }

    fn decide(&self, view: &View, target: &Target<'_>) -> Decision {
        if let Some(limits) = &view.limits
            && !limits.admit(target)
        {
            return Decision {
                effect: Effect::Deny,
                by: By::Scopes,
            };
        }
        for &at in &view.rules {
            let rule = &self.rules[at];
            if rule.reaches(target) {
                return Decision {
                    effect: rule.effect,
                    by: By::Rule {
                        number: at + 1,
                        name: rule.name.clone(),
                    },
                };
            }
        }
        self.by_default()
    }

    /// What applies to `principal`, made once per principal (and again if it comes back with
    /// other scopes or claims).
    fn view(&self, principal: &Principal) -> Arc<View> {
        let mut views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(view) = views.get(&principal.id)
            && view.principal == *principal
        {
            return view.clone();
        }
        let view = Arc::new(View {
            principal: principal.clone(),
            rules: (0..self.rules.len())
                .filter(|&at| self.rules[at].covers(principal))
                .collect(),
            limits: Limits::of(principal),
            decisions: Mutex::default(),
        });
        if views.len() >= MAX_VIEWS {
            views.clear();
        }
        views.insert(principal.id.clone(), view.clone());
        view
    }
}

/// The policy in force, and where it is read from again on a reload (SIGHUP, `POST
/// /admin/cert/reload`): the config file `serve` started with, if any.
#[derive(Debug)]
pub struct Live {
    path: Option<std::path::PathBuf>,
    current: arc_swap::ArcSwap<Policy>,
}

impl Live {
    /// `policy`, read from `path` again on reload.
    pub fn new(policy: Arc<Policy>, path: Option<std::path::PathBuf>) -> Self {
        Self {
            path,
            current: arc_swap::ArcSwap::new(policy),
        }
    }

    /// The policy in force.
    pub fn current(&self) -> arc_swap::Guard<Arc<Policy>> {
        self.current.load()
    }

    /// Read the file again and put its policy in force: the number of rules, or why it was
    /// refused (the old policy stays). Blocking: reads a file.
    pub fn reload(&self) -> Result<Option<usize>, PolicyError> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let policy = Policy::load(path)?;
        let rules = policy.len();
        self.current.store(Arc::new(policy));
        Ok(Some(rules))
    }
}

impl Default for Live {
    fn default() -> Self {
        Self::new(Arc::default(), None)
    }
}

#[cfg(test)]
mod tests;
