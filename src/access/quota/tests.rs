use super::*;
use crate::access::Role;

fn quotas(limits: QuotaLimits) -> (Quotas, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    (Quotas::new(limits, metrics.clone()), metrics)
}

fn principal(id: &str) -> Principal {
    Principal::new(id, Role::Client, Method::StaticToken)
}

fn refusals(metrics: &Metrics, quota: &str) -> String {
    let text = metrics.render(&crate::metrics::Snapshot::default(), 0);
    let series = format!("mcpgw_quota_refusals_total{{quota=\"{quota}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or("none")
        .to_owned()
}

#[test]
fn a_principal_at_its_session_quota_leaves_room_for_others_until_it_closes_one() {
    let (quotas, metrics) = quotas(QuotaLimits {
        sessions_per_principal: 2,
        ..QuotaLimits::default()
    });
    let (a, b) = (principal("token:a"), principal("token:b"));
    let first = quotas.session(&a).unwrap();
    let _second = quotas.session(&a).unwrap();
    let refused = quotas.session(&a).unwrap_err();
    assert_eq!(refused.setting(), "sessions_per_principal");
    let message = refused.to_string();
    assert!(
        message.contains("token:a") && message.contains("[limits] sessions_per_principal = 2"),
        "{message}"
    );
    let _other = quotas
        .session(&b)
        .expect("another principal is not held back");
    drop(first);
    let _again = quotas.session(&a).expect("a closed session makes room");
    assert_eq!(refusals(&metrics, "sessions_per_principal"), "1");
}

#[test]
fn no_auth_and_the_control_socket_are_not_counted_and_counts_go_at_zero() {
    let (quotas, _) = quotas(QuotaLimits {
        sessions_per_principal: 1,
        ..QuotaLimits::default()
    });
    for uncounted in [Principal::anonymous(), Principal::control()] {
        let slots: Vec<_> = (0..5)
            .map(|_| quotas.session(&uncounted).unwrap())
            .collect();
        assert_eq!(quotas.sessions().held(&uncounted.id), 0);
        drop(slots);
    }
    let a = principal("token:a");
    let slot = quotas.session(&a).unwrap();
    assert_eq!(quotas.sessions().held("token:a"), 1);
    drop(slot);
    assert!(quotas.sessions().lock().is_empty(), "no entry kept at zero");
}

#[test]
fn a_bucket_lets_its_burst_through_then_one_request_per_interval() {
    let limiter = RateLimiter::new(Rate {
        per_second: 10,
        burst: 3,
    });
    let id: Arc<str> = "token:a".into();
    let ms = 1_000_000;
    for _ in 0..3 {
        limiter.admit_at(&id, 0).unwrap();
    }
    let wait = limiter.admit_at(&id, 0).unwrap_err();
    assert_eq!(wait, Duration::from_millis(100));
    // One interval later, one more; not two.
    limiter.admit_at(&id, 100 * ms).unwrap();
    assert!(limiter.admit_at(&id, 100 * ms).is_err());
    // Idle long enough, the whole burst again.
    for _ in 0..3 {
        limiter.admit_at(&id, 2_000 * ms).unwrap();
    }
    assert!(limiter.admit_at(&id, 2_000 * ms).is_err());
    // Another principal has a bucket of its own.
    limiter.admit_at(&"token:b".into(), 0).unwrap();
}

#[test]
fn a_refused_request_names_the_rate_and_when_to_retry() {
    let (quotas, metrics) = quotas(QuotaLimits {
        rate: Some(Rate {
            per_second: 1,
            burst: 2,
        }),
        ..QuotaLimits::default()
    });
    let a = principal("token:a");
    quotas.request(&a).unwrap();
    quotas.request(&a).unwrap();
    let refused = quotas.request(&a).unwrap_err();
    let Exceeded::Rate { retry_secs, .. } = &refused else {
        panic!("{refused:?}");
    };
    assert_eq!(*retry_secs, 1);
    assert_eq!(refused.retry_after(), Some(Duration::from_secs(1)));
    let message = refused.to_string();
    assert!(
        message.contains("[limits] requests_per_second = 1, burst = 2"),
        "{message}"
    );
    assert_eq!(refusals(&metrics, "requests_per_second"), "1");
    // Without a rate, and for the anonymous principal, nothing is counted.
    let (unlimited, _) = super::tests::quotas(QuotaLimits::default());
    for _ in 0..1000 {
        unlimited.request(&a).unwrap();
        quotas.request(&Principal::anonymous()).unwrap();
    }
}

#[test]
fn idle_buckets_are_dropped_so_memory_stays_bounded() {
    let limiter = RateLimiter::new(Rate {
        per_second: 1,
        burst: 1,
    });
    let many = SHARDS * SHARD_BUCKETS * 3;
    for i in 0..many {
        // Each principal's bucket is full again one second after its request.
        let now = (i / (SHARDS * SHARD_BUCKETS)) as u64 * 2_000_000_000;
        limiter.admit_at(&format!("jwt:{i}").into(), now).unwrap();
    }
    assert!(
        limiter.buckets() <= SHARDS * (SHARD_BUCKETS + 1),
        "{} buckets",
        limiter.buckets()
    );
}

#[test]
fn a_batch_over_the_limit_is_refused_naming_it() {
    let (quotas, metrics) = quotas(QuotaLimits::default());
    quotas.batch(100).unwrap();
    let refused = quotas.batch(10_529).unwrap_err();
    let message = refused.to_string();
    assert!(
        message.contains("10529") && message.contains("[limits] max_batch"),
        "{message}"
    );
    assert_eq!(refused.retry_after(), None);
    assert_eq!(refusals(&metrics, "max_batch"), "1");
}

#[test]
fn connections_are_capped_per_peer_and_in_all() {
    let (quotas, metrics) = quotas(QuotaLimits {
        max_connections: 3,
        max_connections_per_peer: 2,
        ..QuotaLimits::default()
    });
    let caps = quotas.connections();
    let (one, two): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
    let first = caps.admit(one).unwrap();
    // The same peer over a dual-stack socket.
    let _second = caps.admit("::ffff:10.0.0.1".parse().unwrap()).unwrap();
    let refused = caps.admit(one).unwrap_err();
    assert_eq!(
        refused,
        Exceeded::ConnectionsPerPeer {
            peer: one,
            limit: 2
        }
    );
    assert!(refused.to_string().contains("max_connections_per_peer = 2"));
    let _third = caps.admit(two).unwrap();
    let refused = caps.admit(two).unwrap_err();
    assert_eq!(refused, Exceeded::Connections { limit: 3 });
    drop(first);
    assert_eq!(caps.open(), 2);
    let _again = caps.admit(one).expect("room after one closed");
    assert_eq!(refusals(&metrics, "max_connections_per_peer"), "1");
    assert_eq!(refusals(&metrics, "max_connections"), "1");
}
