use http::{HeaderMap, HeaderValue};
use serde_json::json;

use super::ParamHeaders;

fn schema() -> serde_json::Value {
    json!({
        "type": "object",
        "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "count": {"type": "integer", "x-mcp-header": "Count"},
            "dry": {"type": "boolean", "x-mcp-header": "Dry-Run"},
            "target": {
                "type": "object",
                "properties": {"zone": {"type": "string", "x-mcp-header": "Zone"}}
            },
            "note": {"type": "string"}
        }
    })
}

fn sent(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (k, v) in pairs {
        headers.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    headers
}

#[test]
fn declared_arguments_present_become_headers_and_absent_ones_do_not() {
    let declared = ParamHeaders::of(&schema()).expect("four declarations");
    let args = json!({"region": "eu-west-1", "count": 3, "dry": true, "target": {"zone": "b"}, "note": "x"});
    let mut headers = declared.headers(Some(&args));
    headers.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        headers,
        [
            ("mcp-param-count", "3"),
            ("mcp-param-dry-run", "true"),
            ("mcp-param-region", "eu-west-1"),
            ("mcp-param-zone", "b"),
        ]
    );
    // Null and missing arguments send nothing.
    let args = json!({"region": null});
    assert!(declared.headers(Some(&args)).is_empty());
    assert!(declared.headers(None).is_empty());
}

#[test]
fn a_value_a_header_cannot_carry_goes_as_base64() {
    let declared = ParamHeaders::of(&schema()).unwrap();
    for (value, expected) in [
        ("zürich", "=?base64?esO8cmljaA==?="),
        (" padded", "=?base64?IHBhZGRlZA==?="),
        ("line\nbreak", "=?base64?bGluZQpicmVhaw==?="),
    ] {
        let headers = declared.headers(Some(&json!({"region": value})));
        assert_eq!(headers[0].1, expected, "{value:?}");
        // What one side writes, the other accepts.
        let back = sent(&[("Mcp-Param-Region", &headers[0].1)]);
        declared
            .check(Some(&json!({"region": value})), &back)
            .unwrap();
    }
}

#[test]
fn only_annotations_the_specification_allows_declare_anything() {
    assert_eq!(ParamHeaders::of(&json!({"type": "object"})), None);
    for bad in [
        // Under `items`: not reached through `properties` alone.
        json!({"properties": {"list": {"type": "array", "items": {"type": "string", "x-mcp-header": "A"}}}}),
        // On the root.
        json!({"type": "string", "x-mcp-header": "A"}),
        // A number, an object.
        json!({"properties": {"n": {"type": "number", "x-mcp-header": "N"}}}),
        json!({"properties": {"o": {"type": "object", "x-mcp-header": "O"}}}),
        // Not a token.
        json!({"properties": {"s": {"type": "string", "x-mcp-header": "Two Words"}}}),
        json!({"properties": {"s": {"type": "string", "x-mcp-header": 7}}}),
        // The same name twice, ignoring case.
        json!({"properties": {
            "a": {"type": "string", "x-mcp-header": "Name"},
            "b": {"type": "string", "x-mcp-header": "NAME"}
        }}),
    ] {
        assert_eq!(ParamHeaders::of(&bad), None, "{bad}");
    }
}

#[test]
fn a_client_whose_headers_disagree_with_its_arguments_is_told_which_and_why() {
    let declared = ParamHeaders::of(&schema()).unwrap();
    let args = json!({"region": "eu", "count": 42});
    declared
        .check(
            Some(&args),
            &sent(&[("Mcp-Param-Region", "eu"), ("mcp-param-count", "42.0")]),
        )
        .expect("the same integer written as 42.0 agrees");
    let cases = [
        (
            sent(&[("Mcp-Param-Count", "42")]),
            "the Mcp-Param-Region header is missing but the 'region' argument is present",
        ),
        (
            sent(&[("Mcp-Param-Region", "us"), ("Mcp-Param-Count", "42")]),
            "the Mcp-Param-Region header does not match the 'region' argument",
        ),
        (
            sent(&[
                ("Mcp-Param-Region", "eu"),
                ("Mcp-Param-Region", "eu"),
                ("Mcp-Param-Count", "42"),
            ]),
            "the Mcp-Param-Region header appears more than once",
        ),
        (
            sent(&[
                ("Mcp-Param-Region", "eu"),
                ("Mcp-Param-Count", "42"),
                ("Mcp-Param-Dry-Run", "true"),
            ]),
            "the Mcp-Param-Dry-Run header is present but the 'dry' argument is absent",
        ),
        (
            sent(&[
                ("Mcp-Param-Region", "=?base64?!!?="),
                ("Mcp-Param-Count", "42"),
            ]),
            "the Mcp-Param-Region header is not a valid value (bad base64 or not UTF-8)",
        ),
    ];
    for (headers, expected) in cases {
        assert_eq!(declared.check(Some(&args), &headers), Err(expected.into()));
    }
}
