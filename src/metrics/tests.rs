use std::time::Duration;

use super::*;

#[test]
fn bucket_bounds_are_inclusive_and_overflow_goes_last() {
    assert_eq!(bucket_index(0.0), 0);
    assert_eq!(bucket_index(0.0001), 0);
    assert_eq!(bucket_index(0.00011), 1);
    assert_eq!(bucket_index(1.0), 12);
    assert_eq!(bucket_index(10.0), DURATION_BUCKETS.len() - 1);
    assert_eq!(bucket_index(10.5), DURATION_BUCKETS.len());
}

#[test]
fn bucket_bounds_span_100_microseconds_to_10_seconds_ascending() {
    assert_eq!(DURATION_BUCKETS[0], 0.0001);
    assert_eq!(DURATION_BUCKETS[DURATION_BUCKETS.len() - 1], 10.0);
    assert!(DURATION_BUCKETS.windows(2).all(|w| w[0] < w[1]));
    for (bound, label) in DURATION_BUCKETS.iter().zip(DURATION_BUCKET_LABELS) {
        assert_eq!(format_value(*bound), label);
    }
}

#[test]
fn histogram_is_cumulative_and_inf_equals_count() {
    let h = Histogram::default();
    h.observe(Duration::from_micros(50)); // first bucket
    h.observe(Duration::from_millis(3)); // le=0.005
    h.observe(Duration::from_millis(3));
    h.observe(Duration::from_secs(20)); // overflow
    let (cumulative, total, sum) = h.cumulative();
    assert_eq!(total, 4);
    assert_eq!(cumulative[0], 1);
    assert_eq!(cumulative[bucket_index(0.0025)], 1);
    assert_eq!(cumulative[bucket_index(0.005)], 3);
    assert_eq!(cumulative[DURATION_BUCKETS.len() - 1], 3);
    assert!(cumulative.windows(2).all(|w| w[0] <= w[1]));
    assert!((sum - 20.00605).abs() < 1e-9, "{sum}");
}

#[test]
fn encoder_writes_help_type_and_escaped_labels() {
    let mut e = Encoder::default();
    e.family("m_total", "line one\nback\\slash", "counter");
    e.sample("m_total", &[("a", "q\"uote"), ("b", "n\nl\\")], 3.0);
    e.sample("m_total", &[], 0.5);
    assert_eq!(
        e.finish(),
        "# HELP m_total line one\\nback\\\\slash\n\
         # TYPE m_total counter\n\
         m_total{a=\"q\\\"uote\",b=\"n\\nl\\\\\"} 3\n\
         m_total 0.5\n"
    );
}

#[test]
fn values_use_prometheus_spellings() {
    assert_eq!(format_value(1.0), "1");
    assert_eq!(format_value(0.0001), "0.0001");
    assert_eq!(format_value(-42.0), "-42");
    assert_eq!(format_value(f64::INFINITY), "+Inf");
    assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
    assert_eq!(format_value(f64::NAN), "NaN");
}

#[test]
fn encoder_renders_a_histogram_with_le_last() {
    let h = Histogram::default();
    h.observe(Duration::from_millis(1));
    let mut e = Encoder::default();
    e.histogram("d_seconds", &[("route", "/x")], &h);
    let text = e.finish();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), DURATION_BUCKETS.len() + 3);
    assert_eq!(lines[0], "d_seconds_bucket{route=\"/x\",le=\"0.0001\"} 0");
    assert_eq!(lines[3], "d_seconds_bucket{route=\"/x\",le=\"0.001\"} 1");
    assert_eq!(
        lines[DURATION_BUCKETS.len()],
        "d_seconds_bucket{route=\"/x\",le=\"+Inf\"} 1"
    );
    assert_eq!(
        lines[DURATION_BUCKETS.len() + 1],
        "d_seconds_sum{route=\"/x\"} 0.001"
    );
    assert_eq!(
        lines[DURATION_BUCKETS.len() + 2],
        "d_seconds_count{route=\"/x\"} 1"
    );
}

#[test]
fn render_groups_series_by_family_and_counts_by_label() {
    let m = Metrics::new();
    let get = http::Method::GET;
    m.http_request("/health", &get, 200, Duration::from_millis(1));
    m.http_request("/health", &get, 200, Duration::from_millis(1));
    m.http_request(
        UNMATCHED_ROUTE,
        &http::Method::from_bytes(b"BREW").unwrap(),
        404,
        Duration::ZERO,
    );
    m.upstream_request("up\"1", UpstreamOutcome::RpcError, Duration::from_millis(2));
    m.upstream_request("up\"1", UpstreamOutcome::Offline, Duration::from_secs(99));
    m.certificate_reload(ReloadTrigger::Install, true);
    m.certificate_reload(ReloadTrigger::Sighup, false);
    m.sessions_gauge("streamable-http", 2);
    let snapshot = Snapshot {
        serving_not_after: Some(1_000),
        upstreams: vec![UpstreamSnapshot {
            name: "up\"1".into(),
            transport: "stdio",
            online: true,
            client_not_after: Some(400),
            client_sessions: 0,
            client_sessions_opened: 0,
        }],
    };
    let text = m.render(&snapshot, 100);
    for line in [
        "mcpgw_http_requests_total{route=\"/health\",method=\"GET\",status=\"200\"} 2",
        "mcpgw_http_requests_total{route=\"unmatched\",method=\"other\",status=\"404\"} 1",
        "mcpgw_http_request_duration_seconds_count{route=\"/health\"} 2",
        "mcpgw_sessions_open{transport=\"streamable-http\"} 2",
        "mcpgw_upstream_up{upstream=\"up\\\"1\",transport=\"stdio\"} 1",
        "mcpgw_upstream_requests_total{upstream=\"up\\\"1\",transport=\"stdio\",outcome=\"rpc_error\"} 1",
        "mcpgw_upstream_requests_total{upstream=\"up\\\"1\",transport=\"stdio\",outcome=\"offline\"} 1",
        "mcpgw_upstream_requests_total{upstream=\"up\\\"1\",transport=\"stdio\",outcome=\"ok\"} 0",
        // The offline refusal is not a latency observation.
        "mcpgw_upstream_request_duration_seconds_count{upstream=\"up\\\"1\",transport=\"stdio\"} 1",
        "mcpgw_upstream_client_certificate_expiry_seconds{upstream=\"up\\\"1\",transport=\"stdio\"} 300",
        "mcpgw_certificate_reloads_total{result=\"ok\",trigger=\"install\"} 1",
        "mcpgw_certificate_reloads_total{result=\"failed\",trigger=\"SIGHUP\"} 1",
        "mcpgw_certificate_reloads_total{result=\"ok\",trigger=\"control\"} 0",
        "mcpgw_certificate_expiry_seconds{certificate=\"serving\"} 900",
        &format!(
            "mcpgw_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    // Each family's TYPE appears exactly once.
    let types: Vec<_> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let mut unique = types.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(types.len(), unique.len());
}

#[test]
fn plain_http_exports_no_certificate_series() {
    let text = Metrics::new().render(&Snapshot::default(), 0);
    assert!(
        !text.lines().any(|l| l.starts_with("mcpgw_certificate")),
        "{text}"
    );
    assert!(text.contains("# TYPE mcpgw_certificate_expiry_seconds gauge"));
}
