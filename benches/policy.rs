//! Policy evaluation cost (issue 20: at most 1 µs per call with 1,000 rules). Prints ns per
//! check, side by side, for: no policy; 1,000 rules that do not concern the principal; 1,000
//! rules that all do (the worst case: every rule's object is matched), each the first time a
//! target is asked and then again (the remembered decision every later call gets).
//!
//! `cargo bench --bench policy`

use std::hint::black_box;
use std::time::Instant;

use mcpgw::access::policy::{Kind, Policy, Target};
use mcpgw::access::{Method, Principal, Role};

const RULES: usize = 1_000;
const TARGETS: usize = 200;
const ROUNDS: usize = 50;

fn policy(rules_for: impl Fn(usize) -> String) -> Policy {
    let mut text = String::from("[policy]\n");
    for n in 0..RULES {
        text.push_str(&format!(
            "[[policy.rule]]\nname = \"r{n}\"\neffect = \"deny\"\nprincipals = [\"{}\"]\nupstreams = [\"up-{n}-*\"]\ntools = [\"delete_{n}_*\", \"*_{n}_drop\"]\n",
            rules_for(n)
        ));
    }
    #[derive(serde::Deserialize)]
    struct Only {
        policy: mcpgw::access::policy::FilePolicy,
    }
    let only: Only = toml::from_str(&text).unwrap();
    Policy::compile(only.policy, "bench").unwrap()
}

fn names() -> Vec<(String, String)> {
    (0..TARGETS)
        .map(|n| (format!("up-{}", n % 7), format!("tool_{n}")))
        .collect()
}

/// Nanoseconds per check: the first time each target is asked, then the mean of later rounds.
fn measure(policy: &Policy, principal: &Principal) -> (f64, f64) {
    let names = names();
    fn target((upstream, name): &(String, String)) -> Target<'_> {
        Target {
            kind: Kind::Tool,
            upstream: upstream.as_str(),
            name: name.as_str(),
        }
    }
    let started = Instant::now();
    for pair in &names {
        black_box(policy.check(black_box(principal), &target(pair)));
    }
    let first = started.elapsed().as_nanos() as f64 / names.len() as f64;
    let started = Instant::now();
    for _ in 0..ROUNDS {
        for pair in &names {
            black_box(policy.check(black_box(principal), &target(pair)));
        }
    }
    let again = started.elapsed().as_nanos() as f64 / (names.len() * ROUNDS) as f64;
    (first, again)
}

fn main() {
    let alice = Principal::new("token:alice", Role::Client, Method::StaticToken);
    let open = Policy::default();
    let started = Instant::now();
    for _ in 0..ROUNDS * TARGETS {
        black_box(open.lets_everything(black_box(&alice)));
    }
    let none = started.elapsed().as_nanos() as f64 / (ROUNDS * TARGETS) as f64;
    // Rules for principals `token:bob<n>*`: none concerns alice.
    let others = policy(|n| format!("token:bob{n}*"));
    // Rules for `token:*`: all concern alice, and every rule's object is asked.
    let all = policy(|_| "token:*".to_owned());
    let (others_first, others_again) = measure(&others, &alice);
    let (all_first, all_again) = measure(&all, &alice);
    println!("policy evaluation, ns per check ({RULES} rules, {TARGETS} targets, {ROUNDS} rounds)");
    println!("{:<44} {:>12} {:>12}", "", "first ask", "later asks");
    println!(
        "{:<44} {:>12.0} {:>12.0}",
        "no policy (lets_everything)", none, none
    );
    println!(
        "{:<44} {:>12.0} {:>12.0}",
        "1,000 rules, none concerning the principal", others_first, others_again
    );
    println!(
        "{:<44} {:>12.0} {:>12.0}",
        "1,000 rules, all concerning the principal", all_first, all_again
    );
}
