use super::*;
use crate::access::Method;

fn policy(toml_text: &str) -> Result<Policy, PolicyError> {
    #[derive(Deserialize)]
    struct Only {
        policy: FilePolicy,
    }
    let only: Only = toml::from_str(toml_text).unwrap();
    Policy::compile(only.policy, "mcpgw.toml")
}

fn client(id: &str) -> Principal {
    Principal::new(id, Role::Client, Method::StaticToken)
}

fn tool<'a>(upstream: &'a str, name: &'a str) -> Target<'a> {
    Target {
        kind: Kind::Tool,
        upstream,
        name,
    }
}

const RULES: &str = r#"
[policy]
default = "allow"
[[policy.rule]]
name = "ops-may-delete"
effect = "allow"
principals = ["token:ops*"]
tools = ["delete_*"]
[[policy.rule]]
name = "clients-never-delete"
effect = "deny"
roles = ["client"]
tools = ["delete_*"]
[[policy.rule]]
name = "no-secrets"
effect = "deny"
upstreams = ["vault"]
[[policy.rule]]
name = "ci-from-issuer"
effect = "deny"
claims = { azp = "ci-*" }
resources = ["file:///etc/*"]
"#;

#[test]
fn the_first_matching_rule_decides_and_says_which_it_was() {
    let p = policy(RULES).unwrap();
    let alice = client("token:alice");
    let d = p.check(&alice, &tool("fs", "delete_file"));
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(
        d.explain(&tool("fs", "delete_file")),
        "tool 'delete_file' of upstream 'fs' denied by policy rule clients-never-delete (#2)"
    );
    assert!(p.check(&alice, &tool("fs", "read_file")).allows());
    assert_eq!(p.check(&alice, &tool("fs", "read_file")).by, By::Default);
    // An earlier allow wins over a later deny.
    let ops = client("token:ops-1");
    assert!(p.check(&ops, &tool("fs", "delete_file")).allows());
    // A rule with upstreams and no names covers all of that upstream's kinds.
    let prompt = Target {
        kind: Kind::Prompt,
        upstream: "vault",
        name: "p",
    };
    assert!(!p.check(&ops, &prompt).allows());
    assert!(!p.check(&ops, &tool("vault", "anything")).allows());
    // An administrator is matched by role like anyone: rule 2 names clients only.
    let admin = Principal::new("jwt:root", Role::Admin, Method::Jwt);
    assert!(p.check(&admin, &tool("fs", "delete_file")).allows());
}

#[test]
fn claims_and_scopes_select_principals() {
    let p = policy(RULES).unwrap();
    let mut ci = client("oauth:https://idp#robot");
    ci.claims = Arc::new([("azp".into(), "ci-nightly".into())]);
    let etc = Target {
        kind: Kind::Resource,
        upstream: "fs",
        name: "file:///etc/passwd",
    };
    assert!(!p.check(&ci, &etc).allows());
    assert!(p.check(&client("token:other"), &etc).allows());
    // The same id with other claims gets a view of its own, not the remembered one.
    let mut cd = ci.clone();
    cd.claims = Arc::new([("azp".into(), "cd".into())]);
    assert!(p.check(&cd, &etc).allows());
}

#[test]
fn a_principals_own_scopes_narrow_it_before_any_rule() {
    let p = Policy::default();
    let narrow = client("jwt:bot").with_scopes(["upstream:docs", "tool:fs/read_*"]);
    assert!(p.check(&narrow, &tool("docs", "search")).allows());
    assert!(p.check(&narrow, &tool("fs", "read_file")).allows());
    let denied = p.check(&narrow, &tool("fs", "write_file"));
    assert_eq!((denied.effect, denied.by), (Effect::Deny, By::Scopes));
    let resource = Target {
        kind: Kind::Resource,
        upstream: "fs",
        name: "file:///x",
    };
    assert!(
        !p.check(&narrow, &resource).allows(),
        "tool: scopes grant tools only"
    );
    // Other scopes do not narrow anything.
    let plain = client("jwt:bot2").with_scopes(["read", "mcp:tools"]);
    assert!(p.check(&plain, &tool("fs", "write_file")).allows());
}

#[test]
fn a_deny_default_refuses_what_no_rule_allows() {
    let p = policy(
        r#"
[policy]
default = "deny"
[[policy.rule]]
effect = "allow"
upstreams = ["public-*"]
"#,
    )
    .unwrap();
    let alice = client("token:alice");
    assert!(p.check(&alice, &tool("public-docs", "x")).allows());
    let d = p.check(&alice, &tool("private", "x"));
    assert_eq!((d.effect, d.by), (Effect::Deny, By::Default));
    assert_eq!(
        p.check(&alice, &tool("public-docs", "x")).by,
        By::Rule {
            number: 1,
            name: "#1".into()
        }
    );
}

#[test]
fn a_bad_policy_names_the_rule_the_field_and_what_was_expected() {
    let cases = [
        (
            "[policy]\n[[policy.rule]]\nname = \"r\"\neffect = \"permit\"\n",
            "mcpgw.toml: [[policy.rule]] r: effect: expected \"allow\" or \"deny\", got \"permit\"",
        ),
        (
            "[policy]\n[[policy.rule]]\neffect = \"deny\"\nroles = [\"root\"]\n",
            "mcpgw.toml: [[policy.rule]] #1: roles: expected admin or client, got \"root\"",
        ),
        (
            "[policy]\ndefault = \"maybe\"\n",
            "mcpgw.toml: policy.default: expected \"allow\" or \"deny\", got \"maybe\"",
        ),
        (
            "[policy]\n[[policy.rule]]\neffect = \"deny\"\ntools = [\"\"]\n",
            "mcpgw.toml: [[policy.rule]] #1: tools: expected non-empty patterns, got \"\"",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(policy(text).unwrap_err().to_string(), expected);
    }
}

#[test]
fn remembered_decisions_are_the_ones_a_fresh_evaluation_gives() {
    let p = policy(RULES).unwrap();
    let alice = client("token:alice");
    for _ in 0..3 {
        for name in ["delete_a", "read_a", "delete_b"] {
            let remembered = p.check(&alice, &tool("fs", name));
            let fresh = p.decide(&p.view(&alice), &tool("fs", name));
            assert_eq!(remembered, fresh, "{name}");
        }
    }
}
